"""`bertforge quantize` (dynamic int8 through onnxruntime) and `bertforge distill` (a small
student from a fine-tuned teacher); see bertforge.compress.quantize and bertforge.compress.distill.

The options of `distill` are `bertforge.compress.config.DistillConfig` itself: its fields are
the flags (their docstrings the help), and its `trainer` section (TrainConfig) takes dotted
overrides such as `trainer.max_steps=600` or a `trainer:` block in `--config FILE.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertforge.cli.command import Command, option
from bertforge.compress.config import DistillConfig
from bertforge.fileio import OVERWRITE_HELP


@dataclass
class QuantizeOptions:
    model: Path | None = option(None, help="model directory to quantize")
    out: Path | None = option(None, help="directory for the int8 model (config, tokenizer, model.onnx)")
    per_channel: bool = option(False, help="one scale per output channel instead of per tensor")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


def run_quantize(options: QuantizeOptions) -> int:
    import json

    from bertforge.errors import BertforgeError
    from bertforge.compress.quantize import describe, quantize_model

    if options.model is None or options.out is None:
        raise BertforgeError("quantize needs --model DIR and --out DIR")
    report = quantize_model(options.model, options.out, per_channel=options.per_channel, overwrite=options.overwrite)
    print(json.dumps(describe(report), indent=2))
    return 0


def run_distill(config: DistillConfig) -> int:
    from bertforge.compress.distill import distill
    from bertforge.tasks.finetune import print_json

    summary = distill(config)
    print_json({key: summary[key] for key in ("use_teacher", "student", "teacher_parameters", "steps", "best_step",
                                             "stopped_early", "dev", "train_seconds")})
    return 0


COMMANDS = [
    Command(("quantize",), QuantizeOptions, run_quantize,
            "dynamic int8 quantization of the Linear layers (onnxruntime); the result runs with --backend onnx",
            examples=["bertforge quantize --model runs/sst2/final --out runs/sst2/int8",
                      "bertforge predict --model runs/sst2/int8 --backend onnx 'a fine film'"]),
    Command(("distill",), DistillConfig, run_distill,
            "distill a fine-tuned classifier into a small student (soft-target KL + hard CE, optional TinyBERT terms)",
            examples=["bertforge distill --teacher runs/sst2/final --student-preset mini --task classify "
                      "--train glue/sst2/train.tsv --dev glue/sst2/dev.tsv --out runs/sst2-mini",
                      "bertforge distill --teacher runs/sst2/final --student-preset mini --train train.tsv "
                      "--dev dev.tsv --out runs/mini-tinybert --hidden-weight 1 --attention-weight 1 "
                      "trainer.max_steps=600 trainer.eval_every=100",
                      "bertforge distill ... --no-use-teacher --out runs/mini-baseline   # same student, no teacher",
                      "bertforge distill ... --out runs/sst2-mini trainer.resume=true  # on from the last checkpoint"]),
]
