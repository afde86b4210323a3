"""Fine-tune, evaluate and predict: the library functions behind `bertforge finetune`,
`bertforge evaluate` and `bertforge predict`, for any registered task (bertforge.tasks.registry).

Fine-tuning runs `bertforge.train.Trainer` with a task objective and the trainer's keep-best
hook (`bertforge.train.hooks.KeepBest`): every dev evaluation that improves the task's primary
metric (accuracy, Pearson, entity F1, QA F1) rewrites OUT/final atomically (Hugging Face
layout, tokenizer included), and `patience` evaluations without improvement stop the run (early
stopping); the hook's state rides in the trainer's checkpoints, so a resumed run keeps its
best. At the end, OUT/final is loaded back and scored on dev (and test), so the reported numbers
are those of the saved model.

The task settings a model was fine-tuned with (max_length, doc_stride, word splitting, v2.0 ...)
are stored in its config.json under `finetuning` (`bertforge.tasks.loading.SETTINGS_KEY`), so
`evaluate` and `predict` reuse them; settings the caller gives win.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from bertforge.config import IGNORE_INDEX, BertConfig, to_plain
from bertforge.errors import BertforgeError
from bertforge.fileio import OVERWRITE_HELP, atomic_open, atomic_write_json, prepare_run_directory, start_run
from bertforge.tasks.loading import SETTINGS_KEY, fit_to_model, load_model, load_tokenizer
from bertforge.tasks.registry import get_task
from bertforge.tasks.settings import TaskSettings
from bertforge.tasks.task import Task
from bertforge.train.config import TrainConfig

FINAL = "final"


@dataclass
class TaskObjective:
    """The trainer's view of a task: one loss, averaged over the labelled items of the step.

    Token-level labels (NER) on length-grouped batches need one change. A per-batch mean gives
    every batch the same weight, so a token in a batch of short sentences (headlines, score
    lines) would count up to ten times as much as one in a batch of long sentences (CoNLL-2003); random
    batches, as transformers draws them, weigh every token about the same. With
    `labels_per_row` (the training set's mean labelled tokens per feature), the loss is the
    sum over the batch's labelled tokens divided by the count expected for its number of rows,
    which weighs every token the same whatever the batch holds, so length grouping saves time
    without changing the objective. The logged loss stays the mean over labelled tokens
    (`logged_counts`).
    """

    name: str
    labels_per_row: float | None = None

    def _token_level(self, batch: dict[str, Any]) -> bool:
        labels = batch.get("labels")
        return self.labels_per_row is not None and labels is not None and labels.dim() == 2

    def logged_counts(self, batch: dict[str, Any]) -> dict[str, int]:
        """The labelled items of the micro-batch, which the logged loss is the mean over."""
        if "labels" in batch:
            labels = batch["labels"]
            if labels.dtype.is_floating_point:
                return {self.name: int(labels.shape[0])}
            return {self.name: int((labels != IGNORE_INDEX).sum())}
        return {self.name: int(batch["input_ids"].shape[0])}

    def counts(self, batch: dict[str, Any]) -> dict[str, float]:
        """The loss normalizer: the labelled items, or for token-level grouped batches the count
        expected for the batch's rows."""
        if self._token_level(batch):
            return {self.name: batch["labels"].shape[0] * self.labels_per_row}
        return self.logged_counts(batch)

    def losses(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        loss = model(**batch).loss
        if self._token_level(batch):
            labelled = self.logged_counts(batch)[self.name]
            loss = loss * (labelled / self.counts(batch)[self.name])
        return {self.name: loss}


def labels_per_row(features: Any) -> float | None:
    """Mean labelled tokens per feature, for token-level tasks (None otherwise, or for features
    without packed token labels)."""
    token_labels = getattr(features, "token_labels", None)
    if token_labels is None or len(features) == 0:
        return None
    return max(float((token_labels != IGNORE_INDEX).sum()) / len(features), 1e-6)


@dataclass
class FinetuneRun:
    """What one fine-tuning run does. `bertforge finetune`'s options are this class itself (its
    field docstrings are the `--help`); task, train, dev and out are required."""

    task: str | None = None
    """The task: classify, ner, qa, or one registered at runtime (bertforge.tasks.registry)."""
    model: Path | None = None
    """Pretrained model directory (Hugging Face layout, with vocab.txt)."""
    train: Path | None = None
    """Training file."""
    dev: Path | None = None
    """Dev file: picks the best model, and early stopping."""
    test: Path | None = None
    """Test file, scored with the best model at the end."""
    out: Path | None = None
    """Run directory; the best model goes to OUT/final."""
    epochs: float = 3.0
    """Passes over the training data (ignored when --max-steps is given)."""
    max_steps: int | None = None
    """Optimizer steps (overrides --epochs)."""
    patience: int = 0
    """Stop after this many dev evaluations without improvement (0: never)."""
    eval_batch_size: int = 64
    """Batch size for evaluation."""
    init: Literal["pretrained", "random"] = "pretrained"
    """Start from the model's weights or from scratch."""
    preset: str | None = None
    """With --vocab and no --model: a random model of this size (tiny, mini, base ...)."""
    vocab: Path | None = None
    """vocab.txt to use instead of the model directory's."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Task settings (settings.*). Their type depends on the task, so they are kept as given here and
    checked key by key against the task's settings dataclass (`Task.settings`) before anything is written."""
    trainer: TrainConfig = field(default_factory=TrainConfig)
    """Trainer settings (trainer.*)."""
    overwrite: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def check(self) -> None:
        missing = [name for name in ("task", "train", "dev", "out") if getattr(self, name) is None]
        if missing:
            raise BertforgeError(f"finetune needs {', '.join('--' + name for name in missing)}")


@dataclass
class _Data:
    """A run's examples, read and checked before anything is written."""

    train: list[Any]
    dev: list[Any]
    test: list[Any] | None


def _base_model(run: FinetuneRun) -> tuple[Any, BertConfig, str]:
    """(tokenizer, base config, init) from --model DIR or --preset NAME --vocab FILE."""
    init = run.init
    if run.model is not None:
        tokenizer = load_tokenizer(run.model, run.vocab)
        base_config = BertConfig.from_json_file(run.model / "config.json")
    elif run.preset is not None:
        if run.vocab is None:
            raise BertforgeError("a model built from a preset needs --vocab FILE")
        tokenizer = load_tokenizer(Path("."), run.vocab)
        base_config = BertConfig.from_preset(run.preset, vocab_size=tokenizer.vocab_size)
        init = "random"
    else:
        raise BertforgeError("pass --model DIR (a pretrained model) or --preset NAME --vocab FILE (random init)")
    if base_config.vocab_size < tokenizer.vocab_size:
        raise BertforgeError(f"the vocab has {tokenizer.vocab_size} tokens but the model only {base_config.vocab_size}")
    return tokenizer, base_config, init


def _prepare(task: Task, run: FinetuneRun, settings: TaskSettings, base_config: BertConfig) -> tuple[_Data, BertConfig]:
    """Read the files and configure the head (label maps, the `finetuning` record)."""
    train_examples = task.read(run.train, settings)
    dev_examples = task.read(run.dev, settings)
    labels = task.label_names(train_examples, settings)
    config = task.configure(base_config, labels, settings)
    config.extra = {**config.extra, SETTINGS_KEY: {"task": task.name, "settings": to_plain(settings)}}
    config.extra.pop("architectures", None)
    task.check_labels(dev_examples, config, run.dev)
    test_examples = None
    if run.test is not None:
        test_examples = task.read(run.test, settings)
        task.check_labels(test_examples, config, run.test)
    return _Data(train_examples, dev_examples, test_examples), config


def finetune(run: FinetuneRun, resolved_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune and return {"dev": metrics, "test": metrics?, "steps", "train_seconds", ...};
    `resolved_options` (the CLI's, when given) are written to OUT/config.yaml."""
    import dataclasses

    import torch

    from bertforge.tasks.features import FeatureBatches
    from bertforge.train import Trainer
    from bertforge.train.hooks import KeepBest
    from bertforge.train.plot import CurvesHook

    run.check()
    task = get_task(run.task)  # type: ignore[arg-type]
    settings = task.settings(run.settings)
    out_dir = prepare_run_directory(Path(str(run.out)), overwrite=run.overwrite, resume=run.trainer.resume,
                                    resume_hint="trainer.resume=true", inputs=[run.model])
    torch.manual_seed(run.trainer.seed)
    tokenizer, base_config, init = _base_model(run)
    settings = fit_to_model(settings, base_config, run.settings)
    data, config = _prepare(task, run, settings, base_config)
    model = task.model_class(config) if init == "random" else task.model_class.from_pretrained(run.model, config=config)

    features = task.featurize(data.train, tokenizer, config, settings, training=True)
    micro_batch_size, accumulation = run.trainer.accumulation(1)
    batches = FeatureBatches(features, micro_batch_size, tokenizer.pad_token_id, shuffle=True, seed=run.trainer.seed,
                             group_by_length=run.group_by_length, collate=task.collate)
    max_steps = run.max_steps or max(1, math.ceil(run.epochs * math.ceil(len(batches) / accumulation)))
    train_config = dataclasses.replace(run.trainer, max_steps=max_steps)

    start_run(out_dir, resume=run.trainer.resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resolved_options is not None:
        import yaml

        with atomic_open(out_dir / "config.yaml") as handle:
            yaml.safe_dump(resolved_options, handle, sort_keys=False, allow_unicode=True)

    primary = task.primary(config)
    keep_best = KeepBest(out_dir / FINAL, f"dev_{primary}", patience=run.patience)
    dev_features = task.evaluation_features(data.dev, tokenizer, config, settings)

    def evaluate(model: Any) -> dict[str, float]:
        result = task.evaluate(model, tokenizer, data.dev, settings, run.eval_batch_size, dev_features)
        return {f"dev_{name}": float(value) for name, value in result.metrics.items()
                if isinstance(value, (int, float))}

    # Only length grouping needs the fixed normalizer; random batches keep transformers' loss.
    objective = TaskObjective(task.name, labels_per_row(features) if run.group_by_length else None)
    trainer = Trainer(model, train_config, out_dir, batches, objective, evaluate=evaluate, tokenizer=tokenizer,
                      hooks=[keep_best, CurvesHook()], evaluate_at_start=False)
    started = time.perf_counter()
    result = trainer.fit()
    train_seconds = time.perf_counter() - started
    if keep_best.best_step is None:
        # No evaluation after a step happened (should not: the trainer evaluates at the end).
        keep_best.save(trainer)

    summary: dict[str, Any] = {"task": task.name, "steps": result.step, "best_step": keep_best.best_step,
                               "stopped_early": result.stopped_early, "train_seconds": train_seconds,
                               "train_features": len(features), "primary_metric": primary}
    final_model = task.model_class.from_pretrained(out_dir / FINAL).to(trainer.context.device)
    summary.update(_score_final(task, final_model, tokenizer, data, settings, run, dev_features))
    atomic_write_json(out_dir / "results.json", summary)
    return summary


def _score_final(task: Task, model: Any, tokenizer: Any, data: _Data, settings: TaskSettings, run: FinetuneRun,
                 dev_features: Any) -> dict[str, Any]:
    """Dev (and test) metrics of the saved model; its predictions go to OUT/*_predictions.jsonl."""
    dev_result = task.evaluate(model, tokenizer, data.dev, settings, run.eval_batch_size, dev_features)
    scores: dict[str, Any] = {"dev": dev_result.metrics}
    write_predictions(Path(run.out) / "dev_predictions.jsonl", dev_result.predictions)
    if data.test is not None:
        test_result = task.evaluate(model, tokenizer, data.test, settings, run.eval_batch_size)
        scores["test"] = test_result.metrics
        write_predictions(Path(run.out) / "test_predictions.jsonl", test_result.predictions)
    return scores


def write_predictions(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def evaluate_file(*, model_dir: Path, task_name: str | None, data_path: Path,
                  settings: Mapping[str, Any] | TaskSettings | None = None, batch_size: int = 64,
                  device: str = "auto", backend: str = "auto",
                  onnx_file: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-example predictions of a model directory on a labelled file (backend
    auto: the int8 graph of a quantized directory, else PyTorch)."""
    loaded = load_model(model_dir, backend=backend, device=device, task_name=task_name,  # type: ignore[arg-type]
                        settings=settings, onnx_file=onnx_file)
    if loaded.task is None or loaded.settings is None:
        raise BertforgeError("cannot tell the task of this model (no fine-tuned head); pass --task", path=model_dir)
    examples = loaded.task.read(data_path, loaded.settings)
    loaded.task.check_labels(examples, loaded.config, data_path)
    result = loaded.task.evaluate(loaded.model, loaded.tokenizer, examples, loaded.settings, batch_size)
    return result.metrics, result.predictions


def predict(*, model_dir: Path, task_name: str | None, settings: Mapping[str, Any] | TaskSettings | None = None,
            texts: list[str] | None = None, input_path: Path | None = None, context: str | None = None,
            text_pair: str | None = None, batch_size: int = 64, device: str = "auto", backend: str = "auto",
            onnx_file: Path | None = None) -> list[dict[str, Any]]:
    """Predictions for `texts` or the inputs in `input_path`, on the torch or onnx backend (auto:
    onnx for a quantized directory, see `tasks.loading.resolve_backend`). An
    empty (or all-whitespace) text is an error: it has nothing to predict from."""
    for index, text in enumerate(texts or [], start=1):
        if not text.strip():
            raise BertforgeError(f"input {index} is empty: give each text some words "
                                 "(blank lines of an --input file are skipped)")
    loaded = load_model(model_dir, backend=backend, device=device, task_name=task_name,  # type: ignore[arg-type]
                        settings=settings, onnx_file=onnx_file)
    if loaded.task is None or loaded.settings is None:
        raise BertforgeError(f"predict needs a fine-tuned task model, not a {loaded.kind} model", path=model_dir)
    task, settings = loaded.task, loaded.settings
    if input_path is not None:
        if texts:
            raise BertforgeError("pass either texts or --input FILE, not both")
        inputs = task.read_inputs(input_path, settings)
    elif texts:
        inputs = task.inputs_from_texts(texts, settings, context=context, text_pair=text_pair)
    else:
        raise BertforgeError("nothing to predict: pass texts or --input FILE")
    return task.predict(loaded.model, loaded.tokenizer, inputs, settings, batch_size)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False), file=sys.stdout, flush=True)
