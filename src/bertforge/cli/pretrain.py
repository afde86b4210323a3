"""`bertforge pretrain`: MLM + NSP/SOP (or MLM-only) pretraining; with no arguments, the built-in default."""

from __future__ import annotations

from dataclasses import dataclass, field

from bertforge.cli.command import Command, option
from bertforge.data.masking import MaskingConfig
from bertforge.train.config import TrainConfig


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
    from bertforge.config import build_dataclass
    from bertforge.train.pretrain import PretrainConfig, run_pretraining

    defaults = PretrainConfig()
    train = {**_plain(defaults.train), **options.train}
    if options.resume is not None:
        train["resume"] = options.resume
    if options.quiet:
        train["progress"] = False
    data = {"masking": {}, **options.data}
    settings = {"run_dir": options.run_dir, "model": options.model, "data": data, "train": train}
    if options.fill_mask is not None:
        settings["fill_mask"] = options.fill_mask
    config = build_dataclass(PretrainConfig, settings)
    run_pretraining(config)
    return 0


def _plain(config: TrainConfig) -> dict:
    from dataclasses import asdict

    return asdict(config)


COMMANDS = [Command(
    ("pretrain",), PretrainOptions, run,
    "pretrain BERT (MLM + NSP) from scratch or from a checkpoint; no arguments: the built-in default",
    examples=[
        "bertforge pretrain                      # built-in: mini preset on Python's own docs, ~5 min on 2 cores",
        "bertforge pretrain --config configs/pretrain/mini.yaml",
        "bertforge pretrain --config configs/pretrain/mini.yaml train.max_steps=2000 train.precision=fp32",
        "bertforge pretrain --run-dir runs/demo --resume",
        "torchrun --nproc_per_node 2 -m bertforge pretrain --config configs/pretrain/small.yaml",
    ])]
