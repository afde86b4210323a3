"""`bertforge quantize` (dynamic int8 through onnxruntime), `bertforge distill` (a small
student from a fine-tuned teacher), `bertforge prune` (fewer feed-forward neurons and layers)
and `bertforge compress` (prune -> distill -> int8 over candidate students); see
bertforge.compress.quantize, .distill, .prune and .chain.

The options of `distill`, `prune` and `compress` are the library configs themselves
(`bertforge.compress.config`): their fields are the flags (their docstrings the help), and a
`trainer` section (TrainConfig) takes dotted overrides such as `trainer.max_steps=600` or a
`trainer:` block in `--config FILE.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bertforge.cli.command import Command, option
from bertforge.compress.config import CompressConfig, DistillConfig, PruneConfig
from bertforge.fileio import OVERWRITE_HELP


@dataclass
class QuantizeOptions:
    model: Path | None = option(None, help="model directory to quantize")
    out: Path | None = option(None, help="directory for the int8 model (config, tokenizer, the fp32 model.safetensors, "
                                         "and with --method onnx the int8 model.onnx)")
    method: Literal["torch", "onnx"] = option("torch", help="torch: PyTorch dynamic int8, built from the fp32 weights as the model loads; "
                                      "onnx: an onnxruntime int8 graph (needs the onnx extra)")
    per_channel: bool = option(True, help="one scale per output channel (--no-per-channel: one per tensor)")
    fp32_ffn_output: bool = option(True, help="torch: keep each layer's feed-forward output projection fp32 (its "
                                              "GELU inputs round badly to int8; --no-fp32-ffn-output: all int8, "
                                              "faster, less accurate)")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


def run_quantize(options: QuantizeOptions) -> int:
    import json

    from bertforge.errors import BertforgeError
    from bertforge.compress.quantize import describe, quantize_model

    if options.model is None or options.out is None:
        raise BertforgeError("quantize needs --model DIR and --out DIR")
    report = quantize_model(options.model, options.out, method=options.method, per_channel=options.per_channel,
                            fp32_ffn_output=options.fp32_ffn_output, overwrite=options.overwrite)
    print(json.dumps(describe(report), indent=2))
    return 0


def run_distill(config: DistillConfig) -> int:
    from bertforge.compress.distill import distill
    from bertforge.tasks.finetune import print_json

    summary = distill(config)
    print_json({key: summary[key] for key in ("use_teacher", "student", "teacher_parameters", "steps", "best_step",
                                             "stopped_early", "dev", "train_seconds")})
    return 0


def _split_layer_lists(data: dict[str, Any]) -> dict[str, Any]:
    """`--keep-layers 0,2,4` (or "0,2,4" in YAML) means the list 0 2 4."""
    value = data.get("keep_layers")
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        data["keep_layers"] = [part.strip() for item in value
                               for part in (item.split(",") if isinstance(item, str) else [item])
                               if not isinstance(part, str) or part.strip()]
    return data


def run_prune(config: PruneConfig) -> int:
    import sys

    from bertforge.compress.prune import prune
    from bertforge.tasks.finetune import print_json

    print_json(prune(config, log=lambda line: print(line, file=sys.stderr, flush=True)))
    return 0


def run_compress(config: CompressConfig) -> int:
    import sys

    from bertforge.compress.chain import compress
    from bertforge.tasks.finetune import print_json

    report = compress(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    print_json(report["summary"])
    return 0


COMMANDS = [
    Command(("quantize",), QuantizeOptions, run_quantize,
            "dynamic int8 quantization of the Linear layers (PyTorch by default, or an onnxruntime graph); predict, "
            "evaluate and serve run it as int8, transformers loads the fp32 weights it keeps",
            examples=["bertforge quantize --model runs/sst2/final --out runs/sst2/int8",
                      "bertforge predict --model runs/sst2/int8 'a fine film'       # int8 on PyTorch",
                      "bertforge quantize --model runs/sst2/final --out runs/sst2/int8-onnx --method onnx",
                      "bertforge evaluate --model runs/sst2/int8-onnx --data glue/sst2/dev.tsv --backend torch   # fp32"]),
    Command(("distill",), DistillConfig, run_distill,
            "distill a fine-tuned classifier into a small student (soft-target KL + hard CE, optional TinyBERT terms)",
            examples=["bertforge distill --teacher runs/sst2/final --student-preset mini --task classify "
                      "--train glue/sst2/train.tsv --dev glue/sst2/dev.tsv --out runs/sst2-mini",
                      "bertforge distill --teacher runs/sst2/final --student-preset mini --train train.tsv "
                      "--dev dev.tsv --out runs/mini-tinybert --hidden-weight 1 --attention-weight 1 "
                      "trainer.max_steps=600 trainer.eval_every=100",
                      "bertforge distill ... --no-use-teacher --out runs/mini-baseline   # same student, no teacher",
                      "bertforge distill ... --out runs/sst2-mini trainer.resume=true  # on from the last checkpoint"]),
    Command(("prune",), PruneConfig, run_prune,
            "structured pruning into a standard, smaller BERT: fewer feed-forward neurons in every layer "
            "(ranked by |activation x gradient| of the task loss, or magnitude) and fewer layers",
            defaults=_split_layer_lists, takes_overrides=False,
            examples=["bertforge prune --model runs/sst2/final --task-data glue/sst2/train.tsv --out runs/sst2-pruned "
                      "--keep-ffn 0.5 --layers 4",
                      "bertforge prune --model runs/sst2/final --out runs/sst2-l3 --keep-layers 0,2,4 "
                      "--intermediate-size 768 --score magnitude   # no data needed",
                      "bertforge prune --model runs/sst2/final --out runs/sst2-alt --layers 3 --layer-choice alternate "
                      "--keep-ffn 0.5 --score magnitude   # DistilBERT's every other layer"]),
    Command(("compress",), CompressConfig, run_compress,
            "prune -> distill -> int8 a fine-tuned classifier at a target speed-up; OUT/final is the smallest "
            "candidate within the accuracy budget on dev, OUT/report.json the measurements",
            examples=["bertforge compress --teacher runs/sst2/final --task classify --train glue/sst2/train.tsv "
                      "--dev glue/sst2/dev.tsv --out runs/sst2-compressed --speedup 3 --accuracy-budget 1.0",
                      "bertforge compress ... --candidates 2 trainer.max_steps=2000 trainer.eval_every=500",
                      "bertforge evaluate --model runs/sst2-compressed/final --data glue/sst2/dev.tsv"]),
]
