"""The settings of `bertforge distill` (`bertforge.compress.distill`), kept apart from it (no
torch here) so that the CLI builds its options from them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
        init = None if self.student_init is None else str(self.student_init)
        return {"teacher": str(self.teacher), "student_init": init, "use_teacher": self.use_teacher,
                "temperature": self.temperature, "alpha": self.alpha, "hidden_weight": self.hidden_weight,
                "attention_weight": self.attention_weight,
                "steps": self.trainer.max_steps, "seed": self.trainer.seed}


@dataclass
class PruneConfig:
    """Settings of `bertforge prune` (`bertforge.compress.prune`): structured pruning of a model
    directory into a standard, smaller BERT directory (fewer feed-forward neurons in every
    layer, fewer layers)."""

    model: Path
    """Model directory to prune (a fine-tuned task model; a pretrained one or an encoder with --score magnitude)."""
    out: Path
    """Directory for the pruned model (Hugging Face layout)."""
    task_data: Path | None = None
    """The task's training file: the data the importance scores are measured on (needed by
    --score gradxact and --layer-choice importance)."""
    intermediate_size: int | None = None
    """Feed-forward neurons to keep in every layer (default: all)."""
    keep_ffn: float | None = None
    """Or the fraction of the feed-forward neurons to keep in every layer, in (0, 1]."""
    layers: int | None = None
    """Layers to keep (default: all); which ones, --layer-choice decides."""
    keep_layers: list[int] | None = None
    """Or the 0-based indices of the layers to keep: 0 2 4, or 0,2,4."""
    layer_choice: Literal["importance", "alternate"] = "importance"
    """How --layers picks: importance (drop, one at a time, the layer whose skipping raises the
    task loss least) or alternate (evenly spaced, DistilBERT's every other layer)."""
    score: Literal["gradxact", "magnitude"] = "gradxact"
    """Feed-forward neuron importance: gradxact (|activation x gradient of the task loss|,
    Molchanov et al. 2017, Michel et al. 2019) or magnitude (weight norms, no data)."""
    batches: int = 8
    """Batches of --task-data the scores are measured on."""
    batch_size: int = 32
    """Examples per scoring batch."""
    max_length: int | None = None
    """Tokens per example (default: the model's fine-tuning setting)."""
    seed: int = 0
    """Seed of the order the scoring examples are drawn in."""
    device: str = "cpu"
    """Where the scores are measured: cpu, cuda, auto."""
    overwrite: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self) -> None:
        if self.intermediate_size is not None and self.keep_ffn is not None:
            raise BertforgeError("pass --intermediate-size or --keep-ffn, not both")
        if self.intermediate_size is not None and self.intermediate_size < 1:
            raise BertforgeError(f"cannot prune to {self.intermediate_size} feed-forward neurons: "
                                 "--intermediate-size must keep at least 1")
        if self.keep_ffn is not None and not 0.0 < self.keep_ffn <= 1.0:
            raise BertforgeError(f"--keep-ffn is the fraction of neurons kept, in (0, 1]; got {self.keep_ffn}")
        if self.layers is not None and self.keep_layers is not None:
            raise BertforgeError("pass --layers or --keep-layers, not both")
        if self.layers is not None and self.layers < 1:
            raise BertforgeError(f"cannot keep {self.layers} layers: --layers must keep at least 1")
        if self.keep_layers is not None:
            if not self.keep_layers:
                raise BertforgeError("--keep-layers names no layer: keep at least 1")
            if min(self.keep_layers) < 0 or len(set(self.keep_layers)) != len(self.keep_layers):
                raise BertforgeError(f"--keep-layers must be distinct 0-based layer indices, got {self.keep_layers}")
            self.keep_layers = sorted(self.keep_layers)
        if self.batches < 1 or self.batch_size < 1:
            raise BertforgeError("--batches and --batch-size must be positive")

    def record(self) -> dict[str, Any]:
        """What the pruned config.json records under `pruning` (besides what was kept)."""
        return {"source": str(self.model), "score": self.score, "layer_choice": self.layer_choice,
                "task_data": None if self.task_data is None else str(self.task_data),
                "batches": self.batches, "batch_size": self.batch_size, "seed": self.seed}


@dataclass
class CompressTrainConfig(DistillTrainConfig):
    """The trainer settings of each candidate's distillation: the student starts from the pruned
    teacher's weights, so it takes a fine-tuning learning rate rather than a random student's."""

    learning_rate: float = 1e-4
    max_steps: int = 2500
    """Distillation steps per candidate. Four passes over 20,000 rows at batch 32: the x3
    MiniLM SST-2 student (L3-F576) reached 0.862 dev accuracy in 2,500 steps against 0.846 in
    1,250 (issue 17, benchmarks/results/compress.md); scale it with the data."""
    keep_last: int = 1
    """Checkpoints kept per candidate (each candidate is a run of its own)."""


@dataclass
class CompressConfig:
    """Settings of `bertforge compress` (`bertforge.compress.chain`): prune -> distill ->
    int8, over candidate students of decreasing size; the smallest within the accuracy budget
    becomes OUT/final."""

    teacher: Path
    """Fine-tuned classifier directory (the teacher)."""
    train: Path
    """Training file, in the teacher's task format (pruning scores and distillation)."""
    dev: Path
    """Dev file: the accuracy budget is checked on it."""
    out: Path
    """Output directory: OUT/final (the chosen student), OUT/report.json, OUT/candidates/*."""
    task: str = "classify"
    """The task (classify only)."""
    speedup: float = 3.0
    """Target sentences/s of the student over the fp32 teacher, as OUT/report.json measures them."""
    accuracy_budget: float = 1.0
    """Most dev accuracy points the student may lose against the teacher."""
    candidates: int = 3
    """Candidate students, from the largest estimated to meet --speedup down."""
    candidate_step: float = 1.4
    """Each smaller candidate is estimated this many times faster than the one before."""
    layer_choice: Literal["importance", "alternate"] = "importance"
    """How the kept layers are chosen (see bertforge prune --layer-choice)."""
    score: Literal["gradxact", "magnitude"] = "gradxact"
    """Feed-forward neuron importance (see bertforge prune --score)."""
    score_batches: int = 8
    """Training batches the pruning scores are measured on."""
    temperature: float = 1.0
    """Softmax temperature of the soft targets."""
    alpha: float = 0.5
    """Weight of the soft-target KL; 1 - alpha goes to the hard labels."""
    hidden_weight: float = 0.0
    """Hidden-state matching weight (student layer i against the teacher layer it was kept from; 0: off)."""
    patience: int = 0
    """Stop a distillation after this many dev evaluations without improvement (0: never)."""
    quantize: Literal["auto", "int8", "off"] = "auto"
    """int8 for every student; off: fp32 students on PyTorch; auto: int8 only where it pays on
    this machine, that is where the int8 teacher measured faster than the fp32 teacher and
    stayed within the accuracy budget."""
    quantize_method: Literal["torch", "onnx"] = "torch"
    """How int8 runs (`bertforge.compress.quantize`): PyTorch dynamic int8, or an onnxruntime
    graph. On a Xeon with AMX, torch's int8 ran the MiniLM teacher 1.39x its fp32 and
    onnxruntime's 0.80x (issue 17)."""
    augment: Path | None = None
    """Unlabelled text, one example per line, that the teacher labels (its argmax) and the
    distillation adds to --train: the "teacher labels more text" augmentation of Tang et al.
    2019 and TinyBERT. Pruning scores still come from --train alone."""
    per_channel: bool = True
    """int8 with one scale per output channel (False: one per tensor, which lost 2.1 SST-2 dev
    points on the MiniLM teacher with torch all-int8, against 0.7 per channel, one thread)."""
    fp32_ffn_output: bool = True
    """torch int8: keep each layer's feed-forward output projection fp32 (`bertforge.model.int8.
    int8_linears` gives the measurements)."""
    eval_batch_size: int = 128
    """Examples per forward pass on dev."""
    max_length: int | None = None
    """Tokens per example (default: the teacher's fine-tuning setting)."""
    timing_batch_size: int = 64
    """Sentences per batch when sentences/s are measured (dev in file order, dynamic padding)."""
    timing_rounds: int = 3
    """Timed passes over the timing sentences (the median counts), after one warm-up pass."""
    timing_sentences: int | None = None
    """Dev sentences timed (default: all)."""
    trainer: CompressTrainConfig = field(default_factory=CompressTrainConfig)
    """Trainer settings of each distillation (trainer.*): eval_every evaluates on dev every N steps (0: at the end)."""
    overwrite: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self) -> None:
        if self.task != "classify":
            raise BertforgeError(f"compress supports --task classify only, not {self.task!r}")
        if self.speedup < 1.0:
            raise BertforgeError(f"--speedup must be at least 1, got {self.speedup}")
        if self.accuracy_budget < 0:
            raise BertforgeError(f"--accuracy-budget must be >= 0 points, got {self.accuracy_budget}")
        if self.candidates < 1 or self.candidate_step <= 1.0:
            raise BertforgeError("--candidates must be positive and --candidate-step above 1")
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0 or self.hidden_weight < 0:
            raise BertforgeError("temperature must be positive, alpha in [0, 1] and hidden-weight >= 0")
        if min(self.score_batches, self.eval_batch_size, self.timing_batch_size, self.timing_rounds) < 1 \
                or (self.timing_sentences is not None and self.timing_sentences < 1) or self.patience < 0:
            raise BertforgeError("score-batches, eval-batch-size, timing-batch-size, timing-rounds and "
                                 "timing-sentences must be positive, patience >= 0")
        if self.trainer.resume:
            raise BertforgeError("compress does not resume (trainer.resume); run it again, with --overwrite")
        if self.quantize not in ("auto", "int8", "off"):
            raise BertforgeError(f"--quantize must be auto, int8 or off, got {self.quantize!r}")
        if self.quantize_method not in ("torch", "onnx"):
            raise BertforgeError(f"--quantize-method must be torch or onnx, got {self.quantize_method!r}")
