"""The settings of `bertforge distill` (`bertforge.compress.distill`), kept apart from it (no
torch here) so that the CLI builds its options from them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertforge.config import PRESETS
from bertforge.errors import BertforgeError
from bertforge.fileio import OVERWRITE_HELP
from bertforge.train.config import TrainConfig


@dataclass
class DistillTrainConfig(TrainConfig):
    """The trainer settings, with distillation's defaults: a random-initialized student takes a
    higher peak learning rate and a longer warmup than fine-tuning a pretrained model."""

    learning_rate: float = 3e-4
    warmup_ratio: float = 0.1


@dataclass
class DistillConfig:
    """Settings of `bertforge distill`; trainer settings (steps, batch size, learning rate,
    precision, clipping, resume ...) are the `trainer` section."""

    teacher: Path
    """Fine-tuned classifier directory (the teacher)."""
    train: Path
    """Training file, in the teacher's task format."""
    dev: Path
    """Dev file: picks the best student."""
    out: Path
    """Run directory; the best student goes to OUT/final."""
    student_preset: str = "mini"
    """Student size from the presets (tiny, mini, small ...)."""
    student_init: Path | None = None
    """A pretrained directory to start the student from (same vocab; its size wins over the preset)."""
    task: str = "classify"
    """The task (classify only)."""
    use_teacher: bool = True
    """False (--no-use-teacher): the same student on the hard labels only, the baseline."""
    temperature: float = 1.0
    """Softmax temperature of the soft targets."""
    # The defaults alpha 0.5 at T=1 beat the teacher-free student on SST-2 in
    # benchmarks/results/serve_compress.md, where alpha 0.9 at T=2 did not.
    alpha: float = 0.5
    """Weight of the soft-target KL; 1 - alpha goes to the hard labels."""
    hidden_weight: float = 0.0
    """TinyBERT hidden-state matching weight (0: off)."""
    attention_weight: float = 0.0
    """TinyBERT attention matching weight (0: off)."""
    patience: int = 0
    """Stop after this many dev evaluations without improvement (0: never)."""
    eval_batch_size: int = 128
    """Examples per forward pass on dev."""
    max_length: int | None = None
    """Tokens per example (default: the teacher's fine-tuning setting)."""
    trainer: DistillTrainConfig = field(default_factory=DistillTrainConfig)
    """Trainer settings (trainer.*): eval_every evaluates on dev every N steps (0: at the end)."""
    overwrite: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self) -> None:
        if self.task != "classify":
            raise BertforgeError(f"distillation supports --task classify only, not {self.task!r}")
        if self.student_init is None and self.student_preset not in PRESETS:
            raise BertforgeError(f"unknown student preset {self.student_preset!r}; choose one of {', '.join(PRESETS)}")
        if self.temperature <= 0:
            raise BertforgeError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise BertforgeError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise BertforgeError("hidden-weight and attention-weight must be >= 0")
        if self.eval_batch_size <= 0 or self.patience < 0:
            raise BertforgeError("eval-batch-size must be positive and patience >= 0")

    def record(self) -> dict[str, Any]:
        """What OUT/final/config.json records under `distillation`."""
        return {"teacher": str(self.teacher), "use_teacher": self.use_teacher, "temperature": self.temperature,
                "alpha": self.alpha, "hidden_weight": self.hidden_weight, "attention_weight": self.attention_weight,
                "steps": self.trainer.max_steps, "seed": self.trainer.seed}
