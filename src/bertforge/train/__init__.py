"""Training as a library: the loop, optimizers, schedules, precision, checkpoints, torch.distributed.

Names load on first use so that `bertforge --help` and the other commands do not import torch
just to read `TrainConfig`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainConfig": "bertforge.train.config",
    "Trainer": "bertforge.train.trainer",
    "TrainResult": "bertforge.train.trainer",
    "Objective": "bertforge.train.trainer",
    "autocast": "bertforge.train.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bertforge.train' has no attribute {name!r}")
    return getattr(import_module(module), name)
