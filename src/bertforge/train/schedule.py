"""Learning-rate schedules: linear warmup, then linear, polynomial or no decay (to zero at max_steps)."""

from __future__ import annotations

import torch

from bertforge.train.config import TrainConfig


def schedule_factor(step: int, warmup: int, total: int, kind: str, power: float = 1.0) -> float:
    """The multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    remaining = max(0.0, (total - step) / max(1, total - warmup))
    return remaining if kind == "linear" else remaining ** power


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, total = config.warmup(), config.max_steps
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(step, warmup, total, config.schedule, config.power))
