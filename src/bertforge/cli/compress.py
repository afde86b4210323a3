"""`bertforge quantize` (dynamic int8 through onnxruntime) and `bertforge distill` (a small
student from a fine-tuned teacher); see bertforge.export.quantize and bertforge.export.distill."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from bertforge.cli.command import Command, option


@dataclass
class QuantizeOptions:
    model: Path | None = option(None, help="model directory to quantize")
    out: Path | None = option(None, help="directory for the int8 model (config, tokenizer, model.onnx)")
    per_channel: bool = option(False, help="one scale per output channel instead of per tensor")


def run_quantize(options: QuantizeOptions) -> int:
    import json

    from bertforge.errors import BertforgeError
    from bertforge.export.quantize import describe, quantize_model

    if options.model is None or options.out is None:
        raise BertforgeError("quantize needs --model DIR and --out DIR")
    report = quantize_model(options.model, options.out, per_channel=options.per_channel)
    print(json.dumps(describe(report), indent=2))
    return 0


@dataclass
class DistillOptions:
    teacher: Path | None = option(None, help="fine-tuned classifier directory (the teacher)")
    student_preset: str = option("mini", help="student size from the presets (tiny, mini, small ...)")
    student_init: Path | None = option(None, help="pretrained directory to start the student from (same vocab)")
    task: Literal["classify"] = option("classify", help="the task (classification)")
    train: Path | None = option(None, help="training file (the teacher's task format)")
    dev: Path | None = option(None, help="dev file: picks the best student")
    out: Path | None = option(None, help="run directory; the student goes to OUT/final")
    use_teacher: bool = option(True, help="--no-use-teacher: the same student on hard labels only (baseline)")
    temperature: float = option(1.0, help="softmax temperature of the soft targets")
    alpha: float = option(0.5, help="weight of the soft-target KL (1 - alpha: hard-label cross-entropy)")
    hidden_weight: float = option(0.0, help="TinyBERT hidden-state matching weight (0: off)")
    attention_weight: float = option(0.0, help="TinyBERT attention matching weight (0: off)")
    max_steps: int = option(1000, help="optimizer steps")
    batch_size: int = option(32, help="examples per step")
    learning_rate: float = option(3e-4, help="peak learning rate (AdamW, linear warmup and decay)")
    warmup_ratio: float = option(0.1, help="fraction of the steps spent warming up")
    eval_every: int = option(0, help="evaluate on dev every N steps, keeping the best (0: at the end)")
    max_length: int | None = option(None, help="tokens per example (default: the teacher's)")
    seed: int = option(0, help="seed of the student's init and the batch order")
    device: str = option("cpu", help="cpu, cuda, auto")
    progress: bool = option(True, help="progress bar")


def run_distill(options: DistillOptions) -> int:
    from bertforge.errors import BertforgeError
    from bertforge.export.distill import DistillConfig, distill
    from bertforge.tasks.finetune import print_json

    missing = [name for name in ("teacher", "train", "dev", "out") if getattr(options, name) is None]
    if missing:
        raise BertforgeError(f"distill needs {', '.join('--' + name for name in missing)}")
    config = DistillConfig(**{f.name: getattr(options, f.name) for f in fields(DistillConfig)
                              if hasattr(options, f.name)})
    summary = distill(config)
    print_json({key: summary[key] for key in ("use_teacher", "student", "teacher_parameters", "steps", "best_step",
                                             "dev", "train_seconds")})
    return 0


COMMANDS = [
    Command(("quantize",), QuantizeOptions, run_quantize,
            "dynamic int8 quantization of the Linear layers (onnxruntime); the result runs with --backend onnx",
            examples=["bertforge quantize --model runs/sst2/final --out runs/sst2/int8",
                      "bertforge predict --model runs/sst2/int8 --backend onnx 'a fine film'"]),
    Command(("distill",), DistillOptions, run_distill,
            "distill a fine-tuned classifier into a small student (soft-target KL + hard CE, optional TinyBERT terms)",
            examples=["bertforge distill --teacher runs/sst2/final --student-preset mini --task classify "
                      "--train glue/sst2/train.tsv --dev glue/sst2/dev.tsv --out runs/sst2-mini",
                      "bertforge distill --teacher runs/sst2/final --student-preset mini --train train.tsv "
                      "--dev dev.tsv --out runs/mini-tinybert --hidden-weight 1 --attention-weight 1",
                      "bertforge distill ... --no-use-teacher --out runs/mini-baseline   # same student, no teacher"]),
]
