"""Learning-rate schedules: linear warmup, then linear, polynomial or no decay (to zero at the end).

The end is max_steps, or with a budget on time (`TrainConfig.schedule_budget`, as in Cramming,
Geiping & Goldstein 2022) whichever of max_steps and the time limit comes first: the decay runs
on the fraction of the budget used, max(step / max_steps, elapsed / time limit), so a run cut by
its time limit ends fully decayed instead of in mid-schedule.

The warmup always counts optimizer steps. It is there for the first updates (Adam's moment
estimates built from few gradients, large gradients at initialization), so what it needs is a
number of updates; the wall time of the first steps (allocation, caches, compilation) says
nothing about that, and a warmup in seconds would give a slow start fewer warmup updates.
"""

from __future__ import annotations

from typing import Callable

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


def budget_used(step: int, max_steps: int, elapsed_seconds: float, time_limit_minutes: float | None) -> float:
    """The fraction of the budget used after `step` steps and `elapsed_seconds` of training:
    max(step / max_steps, elapsed / time limit), at most 1 (step / max_steps without a limit)."""
    used = step / max_steps
    if time_limit_minutes is not None:
        used = max(used, elapsed_seconds / (60.0 * time_limit_minutes))
    return min(1.0, used)


def budget_factor(step: int, used: float, warmup: int, total: int, kind: str, power: float = 1.0) -> float:
    """The multiplier of the peak learning rate at optimizer step `step` (0-based) once the
    fraction `used` of the budget is spent: the warmup ramp on steps, the decay on `used`, from
    the peak at the warmup's share of max_steps down to 0 at used = 1; the smaller of the two
    (so the ramp meets the decay without a jump when time runs out before the warmup does).
    With used = step / total this is `schedule_factor`."""
    ramp = (step + 1) / warmup if warmup > 0 and step < warmup else 1.0
    if kind == "constant":
        return ramp
    remaining = min(1.0, max(0.0, (1.0 - used) * total / max(1, total - warmup)))
    return min(ramp, remaining if kind == "linear" else remaining ** power)


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   elapsed: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """The LambdaLR of `config`. With a budget on time (`config.budget() == "time"`), `elapsed`
    gives the seconds of training so far, read each time the schedule steps (the trainer's
    clock, restored on resume); without it, or on steps, the schedule counts steps only."""
    warmup, total = config.warmup(), config.max_steps
    if config.budget() == "time" and elapsed is not None:
        def factor(step: int) -> float:
            used = budget_used(step, total, elapsed(), config.time_limit_minutes)
            return budget_factor(step, used, warmup, total, config.schedule, config.power)
    else:
        def factor(step: int) -> float:
            return schedule_factor(step, warmup, total, config.schedule, config.power)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
