"""`bertforge pretrain`: MLM + NSP/SOP (or MLM-only) pretraining; with no arguments, the built-in default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from bertforge.cli.command import Command, option

if TYPE_CHECKING:
    from bertforge.train.pretrain import PretrainConfig


@dataclass
class PretrainOptions:
    run_dir: str = option("runs/pretrain", help="run directory: config, metrics, checkpoints, final model")
    resume: bool | None = option(None, help="continue from the newest complete checkpoint in the run directory")
    quiet: bool = option(False, help="no progress bar")
    model: dict = option(default_factory=dict, help="model section (preset, init_from, changes)")
    data: dict = option(default_factory=dict, help="data section (prepared, inputs, vocab, prepare, masking)")
    train: dict = option(default_factory=dict, help="train section (batch_size, max_steps, learning_rate, …)")
    fill_mask: list[str] | None = option(None, help="sentences with [MASK] to complete at the end")


def run(options: PretrainOptions) -> int:
    from bertforge.train.pretrain import run_pretraining

    run_pretraining(resolve(options))
    return 0


def resolve(options: PretrainOptions) -> PretrainConfig:
    """The checked `PretrainConfig` these options describe."""
    from bertforge.config import build_dataclass, deep_merge
    from bertforge.train.pretrain import PretrainConfig

    # The built-in default is a whole recipe: corpus, model and training settings (a time limit
    # among them). A run on the user's own data starts from the sections' plain defaults, so
    # that no recipe inherits the built-in run's 4.5-minute limit or its learning rate.
    builtin = not (options.data.get("inputs") or options.data.get("prepared"))
    defaults = PretrainConfig()
    train = {**(asdict(defaults.train) if builtin else {}), **options.train}
    model = deep_merge(asdict(defaults.model), options.model) if builtin else options.model
    if options.resume is not None:
        train["resume"] = options.resume
    if options.quiet:
        train["progress"] = False
    data = {"masking": {}, **options.data}
    settings = {"run_dir": options.run_dir, "model": model, "data": data, "train": train}
    if options.fill_mask is not None:
        settings["fill_mask"] = options.fill_mask
    return build_dataclass(PretrainConfig, settings)


COMMANDS = [Command(
    ("pretrain",), PretrainOptions, run,
    "pretrain BERT (MLM + NSP) from scratch or from a checkpoint; no arguments: the built-in default",
    examples=[
        "bertforge pretrain                      # built-in: tiny preset on Python's own docs, ~5 min on 2 cores",
        "bertforge pretrain --config configs/pretrain/mini-cpu.yaml",
        "bertforge pretrain --config configs/pretrain/mini-cpu.yaml train.max_steps=2000 train.precision=fp32",
        "bertforge pretrain --run-dir runs/demo --resume",
        "torchrun --nproc_per_node 2 -m bertforge pretrain --config configs/pretrain/small-gpu.yaml",
    ])]
