"""Trainer hooks: code the Trainer calls after each evaluation, whose state rides in its checkpoints.

A hook has a `name` (its key in the checkpoint), `on_evaluate(trainer, metrics) -> bool`
(True stops the run) and `state_dict()` / `load_state_dict(state)`. The Trainer saves every
hook's state in `trainer_state.pt` and restores it on resume, so a resumed run goes on from
the same best value and patience count as the run that died.

`KeepBest` (here) is keep-best and early stopping, used by fine-tuning and distillation alike;
`bertforge.train.plot.CurvesHook` redraws a run's curves.png after each evaluation.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bertforge.errors import BertforgeError
from bertforge.fileio import replace_directory

if TYPE_CHECKING:
    from bertforge.train.trainer import Trainer


class Hook(Protocol):
    name: str
    """Key of this hook's state in the trainer's checkpoints (unique among a trainer's hooks)."""

    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> bool:
        """Called on every rank after each evaluation (at `trainer.step`); True stops the run."""

    def state_dict(self) -> dict[str, Any]:
        """Plain values (numbers, strings, None, lists, dicts) to store in a checkpoint."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class KeepBest:
    """Keeps the best model on one metric in `directory` and stops after `patience` evaluations
    without improvement (0: never stops).

    Each evaluation that improves `metric` (or the first one) rewrites `directory` atomically
    with the trainer's unwrapped model and tokenizer (Hugging Face layout: a complete directory
    or the previous one, never half of one); rank 0 writes, every rank waits for it. Only a
    strict improvement counts: ties keep the earlier model. `mode="min"` is for losses.
    """

    def __init__(self, directory: str | Path, metric: str, *, patience: int = 0,
                 mode: Literal["max", "min"] = "max", name: str = "keep_best"):
        if patience < 0:
            raise BertforgeError(f"patience must be >= 0, got {patience}")
        if mode not in ("max", "min"):
            raise BertforgeError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory = Path(directory)
        self.metric = metric
        self.patience = patience
        self.mode = mode
        self.name = name
        self.best = -math.inf if mode == "max" else math.inf
        self.best_step: int | None = None
        """Step of the saved model; None until the first evaluation."""
        self.best_metrics: dict[str, float] = {}
        """All metrics of the evaluation that produced the saved model."""
        self.stale = 0
        """Evaluations since the last improvement."""

    def improves(self, value: float) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> bool:
        if self.metric not in metrics:
            raise BertforgeError(f"keep-best metric {self.metric!r} is not among the evaluation's metrics "
                                 f"({', '.join(sorted(metrics)) or 'none'})")
        value = float(metrics[self.metric])
        if self.best_step is None or self.improves(value):
            self.best, self.best_step, self.stale = value, trainer.step, 0
            self.best_metrics = {key: float(v) for key, v in metrics.items()}
            self.save(trainer)
            return False
        self.stale += 1
        return self.patience > 0 and self.stale >= self.patience

    def save(self, trainer: "Trainer") -> None:
        """Write the trainer's model and tokenizer to `directory` now (atomically, on rank 0)."""
        from bertforge.train.distributed import barrier

        if trainer.context.is_main:
            temporary = self.directory.with_name(f".{self.directory.name}.tmp")
            shutil.rmtree(temporary, ignore_errors=True)
            trainer.bare_model.save_pretrained(temporary, tokenizer=trainer.tokenizer)
            replace_directory(temporary, self.directory)
        barrier(trainer.context)

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "best": self.best, "best_step": self.best_step,
                "best_metrics": dict(self.best_metrics), "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("metric", self.metric) != self.metric:
            raise BertforgeError(f"cannot resume: the checkpoint kept the best on {state['metric']!r}, "
                                 f"this run on {self.metric!r}")
        self.best, self.best_step, self.stale = float(state["best"]), state["best_step"], int(state["stale"])
        self.best_metrics = dict(state.get("best_metrics") or {})
