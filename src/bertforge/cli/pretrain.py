"""`bertforge pretrain`: MLM + NSP/SOP (or MLM-only) pretraining; with no arguments, the built-in default.

The options are `PretrainConfig` itself (sections model, data, train, set from `--config` and
dotted overrides) plus `--resume` and `--quiet`. The whole tree is built and checked before
anything runs, so a misspelt key fails before a run directory, a vocab or data is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from bertforge.cli.command import Command, option
from bertforge.config import deep_merge, to_plain
from bertforge.train.recipe import PretrainConfig, plain_sections


@dataclass
class PretrainOptions(PretrainConfig):
    resume: bool | None = option(None, help="continue from the newest complete checkpoint in the run directory")
    quiet: bool = option(False, help="no progress bar")


def complete(data: dict[str, Any]) -> dict[str, Any]:
    """The recipe's defaults under what was asked for.

    The built-in default is a whole recipe: corpus, model and training settings (a time limit
    among them). A run on the user's own data starts from the sections' plain defaults, so that
    no recipe inherits the built-in run's 4.5-minute limit or its learning rate.
    """
    section = data.get("data") or {}
    builtin = not (isinstance(section, dict) and (section.get("inputs") or section.get("prepared")))
    return deep_merge(to_plain(PretrainConfig() if builtin else plain_sections()), data)


def resolve(options: PretrainOptions) -> PretrainConfig:
    """The `PretrainConfig` these options describe (`--resume` and `--quiet` folded into train)."""
    train = options.train
    if options.resume is not None:
        train = dataclasses.replace(train, resume=options.resume)
    if options.quiet:
        train = dataclasses.replace(train, progress=False)
    values = {f.name: getattr(options, f.name) for f in fields(PretrainConfig) if f.init}
    return PretrainConfig(**{**values, "train": train})


def run(options: PretrainOptions) -> int:
    from bertforge.train.recipe import run_pretraining

    run_pretraining(resolve(options))
    return 0


COMMANDS = [Command(
    ("pretrain",), PretrainOptions, run,
    "pretrain BERT (MLM + NSP) from scratch or from a checkpoint; no arguments: the built-in default",
    defaults=complete,
    examples=[
        "bertforge pretrain                      # built-in: tiny preset on Python's own docs, ~5 min on 2 cores",
        "bertforge pretrain --config configs/pretrain/mini-cpu.yaml",
        "bertforge pretrain --config configs/pretrain/mini-cpu.yaml train.max_steps=2000 train.precision=fp32",
        "bertforge pretrain --config configs/pretrain/demo.yaml data.prepare.max_seq_length=128 "
        "data.masking.masked_lm_prob=0.3",
        "bertforge pretrain --run-dir runs/demo --resume",
        "torchrun --nproc_per_node 2 -m bertforge pretrain --config configs/pretrain/small-gpu.yaml",
    ])]
