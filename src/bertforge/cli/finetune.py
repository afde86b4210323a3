"""`bertforge finetune`, `bertforge evaluate` and `bertforge predict`, for every registered task
(bertforge.tasks.registry: classify, ner, qa, and any task registered at runtime; see each task
module for its data formats, head and metrics).

Task settings (columns, max_length, doc_stride, ...) live under `settings.*`, trainer settings
under `trainer.*` (bertforge.train.TrainConfig); both can come from a recipe in
configs/finetune/*.yaml (`--config`) and dotted overrides such as `trainer.learning_rate=3e-5`.
The type of the `settings` section depends on the task (its `settings_class`), so it is read
as a mapping here and checked key by key against the task's dataclass as soon as the task is
known (`Task.settings`), before anything is written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bertforge.cli.command import Command, option
from bertforge.fileio import OVERWRITE_HELP
from bertforge.tasks.finetune import FinetuneRun
from bertforge.tasks.registry import task_names

TASK_HELP = ", ".join(task_names())
SETTINGS_HELP = "task settings (settings.*; each task's settings dataclass lists them)"
BACKEND_HELP = ("torch; onnx: onnxruntime on MODEL/model.onnx (bertforge export onnx / quantize); auto: onnx for a "
                "directory bertforge quantize wrote (its int8 graph), else torch")


def _show_warnings() -> None:
    """Print user warnings as one `warning: ...` line, like errors, without Python's decoration."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        print(f"warning: {message}", file=sys.stderr, flush=True)

    warnings.showwarning = show


@dataclass
class FinetuneOptions(FinetuneRun):
    """`bertforge finetune`'s options: `bertforge.tasks.finetune.FinetuneRun` itself (the task
    names of its --help read from the registry)."""

    task: str | None = option(None, help=f"the task: {TASK_HELP} (or one registered at runtime)")


def run_finetune(options: FinetuneOptions) -> int:
    from bertforge.config import to_plain
    from bertforge.tasks.finetune import finetune, print_json

    _show_warnings()
    print_json(finetune(options, resolved_options=to_plain(options)))
    return 0


@dataclass
class EvaluateOptions:
    model: Path | None = option(None, help="fine-tuned model directory")
    data: Path | None = option(None, help="labelled file to score")
    task: str | None = option(None, help=f"{TASK_HELP} (default: the model's own)")
    out: Path | None = option(None, help="metrics JSON file (default: MODEL/eval-<data name>.json)")
    predictions: Path | None = option(None, help="also write one JSON line per example here")
    batch_size: int = option(64, help="examples per forward pass")
    device: str = option("auto", help="cpu, cuda, cuda:1 ... (auto: CUDA when available)")
    settings: dict[str, Any] = option(default_factory=dict, help=SETTINGS_HELP)
    backend: Literal["auto", "torch", "onnx"] = option("auto", help=BACKEND_HELP)
    onnx_file: Path | None = option(None, help="with --backend onnx: the ONNX graph (default MODEL/model.onnx)")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


def run_evaluate(options: EvaluateOptions) -> int:
    from bertforge.errors import BertforgeError
    from bertforge.fileio import atomic_write_json, prepare_output
    from bertforge.tasks.finetune import evaluate_file, print_json, write_predictions

    _show_warnings()
    if options.model is None or options.data is None:
        raise BertforgeError("evaluate needs --model DIR and --data FILE")
    out = options.out or options.model / f"eval-{options.data.stem}.json"
    for path in (out, options.predictions):
        if path is not None:
            prepare_output(path, kind="file", overwrite=options.overwrite)
    metrics, predictions = evaluate_file(model_dir=options.model, task_name=options.task, data_path=options.data,
                                         settings=options.settings, batch_size=options.batch_size,
                                         device=options.device, backend=options.backend,
                                         onnx_file=options.onnx_file)
    atomic_write_json(out, metrics)
    if options.predictions is not None:
        write_predictions(options.predictions, predictions)
    print_json(metrics)
    return 0


@dataclass
class PredictOptions:
    texts: list[str] = option(default_factory=list, positional=True,
                              help="texts (questions for qa) to predict on; an empty one is an error "
                                   "(blank lines of --input are skipped)")
    model: Path | None = option(None, help="fine-tuned model directory")
    task: str | None = option(None, help=f"{TASK_HELP} (default: the model's own)")
    input: Path | None = option(None, help="file of inputs: the task's data format, text lines, or JSON lines")
    context: str | None = option(None, help="qa: the context the questions are asked about")
    text_pair: str | None = option(None, help="classify: the second text, for models trained on pairs")
    out: Path | None = option(None, help="write the JSON lines here instead of standard output")
    batch_size: int = option(64, help="examples per forward pass")
    device: str = option("auto", help="cpu, cuda, cuda:1 ... (auto: CUDA when available)")
    settings: dict[str, Any] = option(default_factory=dict, help=SETTINGS_HELP)
    backend: Literal["auto", "torch", "onnx"] = option("auto", help=BACKEND_HELP)
    onnx_file: Path | None = option(None, help="with --backend onnx: the ONNX graph (default MODEL/model.onnx)")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


def run_predict(options: PredictOptions) -> int:
    import json

    from bertforge.errors import BertforgeError
    from bertforge.fileio import prepare_output
    from bertforge.tasks.finetune import predict, write_predictions

    _show_warnings()
    if options.model is None:
        raise BertforgeError("predict needs --model DIR")
    if options.out is not None:
        prepare_output(options.out, kind="file", overwrite=options.overwrite)
    # The onnx backend (bertforge.tasks.onnx_backend) runs the same task predict code.
    records = predict(model_dir=options.model, task_name=options.task, settings=options.settings,
                      texts=options.texts, input_path=options.input, context=options.context,
                      text_pair=options.text_pair, batch_size=options.batch_size, device=options.device,
                      backend=options.backend, onnx_file=options.onnx_file)
    if options.out is not None:
        write_predictions(options.out, records)
    else:
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 0


COMMANDS = [
    Command(("finetune",), FinetuneOptions, run_finetune,
            "fine-tune a BERT checkpoint for a task: classification, NER, extractive QA, or a registered one",
            examples=[
                "bertforge finetune --config configs/finetune/sst2.yaml --model MODEL_DIR --out runs/sst2",
                "bertforge finetune --task ner --model MODEL_DIR --train conll2003/train.txt "
                "--dev conll2003/valid.txt --test conll2003/test.txt --out runs/conll trainer.learning_rate=5e-5",
                "bertforge finetune --task qa --model MODEL_DIR --train train.json --dev dev.json --out runs/squad "
                "settings.max_length=384 settings.doc_stride=128",
            ]),
    Command(("evaluate",), EvaluateOptions, run_evaluate,
            "score a fine-tuned model on a labelled file; prints and writes the metrics JSON",
            examples=["bertforge evaluate --model runs/sst2/final --data glue/sst2/dev.tsv",
                      "bertforge evaluate --model runs/squad/final --data dev-v1.1.json --predictions preds.jsonl"]),
    Command(("predict",), PredictOptions, run_predict,
            "predict with a fine-tuned model; writes one JSON line per input",
            examples=["bertforge predict --model runs/sst2/final 'a gripping, funny film' 'dull and long'",
                      "bertforge predict --model runs/conll/final --input texts.txt --out entities.jsonl",
                      "bertforge predict --model runs/squad/final --context 'Paris is in France.' 'Where is Paris?'",
                      "bertforge predict --model runs/sst2/final --backend onnx 'a gripping film'   # after export onnx"]),
]
