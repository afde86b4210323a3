"""`TrainConfig`: everything the trainer needs to know, checked when built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bertforge.errors import BertforgeError


@dataclass
class TrainConfig:
    """Optimization, precision, evaluation, checkpointing and scale-out settings."""

    batch_size: int = 32
    """Global batch per optimizer step, over all ranks and accumulation steps."""
    micro_batch_size: int | None = None
    """Sequences per forward on one rank; None means batch_size / world size (no accumulation)."""
    max_steps: int = 1000
    """Optimizer steps; the learning-rate schedule decays to zero at this step."""
    time_limit_minutes: float | None = None
    """Stop early (evaluate and save as at the end) once this much wall time of training has
    passed, counted over resumes (the elapsed time rides in the checkpoints)."""
    schedule_budget: Literal["auto", "steps", "time"] = "auto"
    """What the learning-rate decay runs on. steps: step / max_steps. time: the fraction of the
    budget used, max(step / max_steps, elapsed / time_limit_minutes), so a run cut by its time
    limit ends fully decayed (Cramming); needs time_limit_minutes. auto: time when
    time_limit_minutes is set, else steps. The warmup counts steps either way."""
    optimizer: Literal["adamw", "lamb"] = "adamw"
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    """Decoupled weight decay on matrices and embeddings; never on biases or LayerNorm."""
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-6
    schedule: Literal["linear", "polynomial", "constant"] = "linear"
    power: float = 1.0
    """Exponent of the polynomial decay (1.0 is linear)."""
    warmup_steps: int | None = None
    warmup_ratio: float = 0.01
    """Fraction of max_steps spent warming up, used when warmup_steps is None."""
    max_grad_norm: float | None = 1.0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on CUDA with bf16 support, else fp32, on every CPU (bf16 measured
    slower there even where native: `bertforge.train.precision`); bf16 autocast on CPU or CUDA;
    fp16 with a GradScaler, CUDA only."""
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    """"auto" picks CUDA (this rank's GPU) when available, else CPU."""
    eval_every: int = 0
    """Evaluate on the held-out split every N steps (0: only at the start and the end)."""
    eval_batches: int | None = None
    """Cap on held-out batches per evaluation (None: the whole split)."""
    save_every: int = 0
    """Write a checkpoint every N steps (0: only at the end)."""
    keep_last: int = 3
    log_every: int = 10
    resume: bool = False
    """Continue from the newest complete checkpoint in the run directory, if there is one."""
    max_nonfinite_steps: int = 5
    """Skip a step whose loss or gradient is not finite; stop after this many in a row."""
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: DDP (replicated) or FSDP (sharded parameters, gradients and optimizer state)."""
    progress: bool = True
    tensorboard: bool = True
    """Also write TensorBoard events when the tensorboard package is installed."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "keep_last", "log_every", "max_nonfinite_steps"):
            if getattr(self, name) <= 0:
                raise BertforgeError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.micro_batch_size is not None and not 0 < self.micro_batch_size <= self.batch_size:
            raise BertforgeError(f"train.micro_batch_size must be in 1..batch_size, got {self.micro_batch_size}")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise BertforgeError("train.learning_rate must be > 0 and train.weight_decay >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise BertforgeError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.eval_every < 0 or self.save_every < 0:
            raise BertforgeError("train.eval_every and train.save_every must be >= 0")
        if self.time_limit_minutes is not None and not self.time_limit_minutes > 0:
            raise BertforgeError(f"train.time_limit_minutes must be positive, got {self.time_limit_minutes}")
        if self.schedule_budget == "time" and self.time_limit_minutes is None:
            raise BertforgeError("train.schedule_budget=time needs train.time_limit_minutes")

    def budget(self) -> Literal["steps", "time"]:
        """What the learning-rate schedule runs on, with `auto` resolved (`schedule_budget`)."""
        if self.schedule_budget == "auto":
            return "steps" if self.time_limit_minutes is None else "time"
        return self.schedule_budget

    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else int(self.warmup_ratio * self.max_steps)

    def accumulation(self, world_size: int) -> tuple[int, int]:
        """(micro batch size, accumulation steps) so that micro * steps * world_size == batch_size."""
        micro = self.micro_batch_size or max(1, self.batch_size // world_size)
        if self.batch_size % (micro * world_size):
            raise BertforgeError(
                f"train.batch_size {self.batch_size} is not a multiple of micro_batch_size {micro} x "
                f"world size {world_size}")
        return micro, self.batch_size // (micro * world_size)
