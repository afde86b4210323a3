"""`bertforge quantize` (dynamic int8 through onnxruntime) and `bertforge distill` (a small
student from a fine-tuned teacher); see bertforge.compress.quantize and bertforge.compress.distill.

The distill options are generated from `bertforge.compress.config.DistillConfig`: its fields
are the flags (their docstrings the help), and its `trainer` section (TrainConfig) takes dotted
overrides such as `trainer.max_steps=600` or a `trainer:` block in `--config FILE.yaml`.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, make_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from bertforge.cli.command import Command, option
from bertforge.compress.config import DistillConfig


@dataclass
class QuantizeOptions:
    model: Path | None = option(None, help="model directory to quantize")
    out: Path | None = option(None, help="directory for the int8 model (config, tokenizer, model.onnx)")
    per_channel: bool = option(False, help="one scale per output channel instead of per tensor")


def run_quantize(options: QuantizeOptions) -> int:
    import json

    from bertforge.errors import BertforgeError
    from bertforge.compress.quantize import describe, quantize_model

    if options.model is None or options.out is None:
        raise BertforgeError("quantize needs --model DIR and --out DIR")
    report = quantize_model(options.model, options.out, per_channel=options.per_channel)
    print(json.dumps(describe(report), indent=2))
    return 0


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string under it in the class body), cut to its first sentence."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            text = " ".join(after.value.value.split())
            docs[node.target.id] = text.split(". ")[0].rstrip(".")
    return docs


def options_from(config: type, name: str) -> type:
    """An options dataclass with `config`'s fields, types, defaults and docstrings (as --help),
    except that required fields default to None, so that the command can name what is missing."""
    hints = get_type_hints(config)
    docs = field_docs(config)
    specs: list[tuple[str, Any, Any]] = []
    for f in fields(config):
        if f.default is MISSING and f.default_factory is MISSING:
            specs.append((f.name, hints[f.name] | None, option(None, help=docs.get(f.name, ""))))
        elif f.default_factory is not MISSING:
            specs.append((f.name, hints[f.name], option(default_factory=f.default_factory, help=docs.get(f.name, ""))))
        else:
            specs.append((f.name, hints[f.name], option(f.default, help=docs.get(f.name, ""))))
    return make_dataclass(name, specs)


DistillOptions = options_from(DistillConfig, "DistillOptions")


def run_distill(options: Any) -> int:
    from bertforge.compress.distill import distill
    from bertforge.errors import BertforgeError
    from bertforge.tasks.finetune import print_json

    required = [f.name for f in fields(DistillConfig) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if getattr(options, name) is None]
    if missing:
        raise BertforgeError(f"distill needs {', '.join('--' + name for name in missing)}")
    summary = distill(DistillConfig(**{f.name: getattr(options, f.name) for f in fields(DistillConfig)}))
    print_json({key: summary[key] for key in ("use_teacher", "student", "teacher_parameters", "steps", "best_step",
                                             "stopped_early", "dev", "train_seconds")})
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
                      "--dev dev.tsv --out runs/mini-tinybert --hidden-weight 1 --attention-weight 1 "
                      "trainer.max_steps=600 trainer.eval_every=100",
                      "bertforge distill ... --no-use-teacher --out runs/mini-baseline   # same student, no teacher",
                      "bertforge distill ... --out runs/sst2-mini trainer.resume=true   # go on from the last checkpoint"]),
]
