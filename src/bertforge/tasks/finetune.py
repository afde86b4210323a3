"""Fine-tune, evaluate and predict: the library functions behind `bertforge finetune`,
`bertforge evaluate` and `bertforge predict`.

Fine-tuning runs `bertforge.train.Trainer` with a task objective; the trainer has no notion of
a "best" model, so it is kept here through the trainer's `on_evaluate` hook: every dev
evaluation that improves the task's primary metric (accuracy, Pearson, entity F1, QA F1)
rewrites OUT/final atomically (Hugging Face layout, tokenizer included), and `patience`
evaluations without improvement stop the run (early stopping). At the end, OUT/final is loaded
back and scored on dev (and test), so the reported numbers are those of the saved model.

The task settings a model was fine-tuned with (max_length, doc_stride, word splitting, v2.0 ...)
are stored in its config.json under `finetuning`, so `evaluate` and `predict` reuse them;
settings given on the command line that differ from the defaults win.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from bertforge.config import IGNORE_INDEX, BertConfig, build_dataclass, to_plain
from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_open, atomic_write_json, replace_directory
from bertforge.tasks import ARCHITECTURES, get_task
from bertforge.tasks.common import Task, TaskSettings

FINAL = "final"
SETTINGS_KEY = "finetuning"
"""config.json key holding {"task": name, "settings": {...}} of a fine-tuned model."""


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
    """Mean labelled tokens per feature, for token-level tasks (None otherwise)."""
    if features.token_labels is None or len(features) == 0:
        return None
    return max(float((features.token_labels != IGNORE_INDEX).sum()) / len(features), 1e-6)


def load_tokenizer(directory: Path, vocab: Path | None = None) -> Any:
    from bertforge.tokenizer import BertTokenizer

    if vocab is not None:
        return BertTokenizer(vocab)
    if not (directory / "vocab.txt").exists():
        raise BertforgeError("no vocab.txt in the model directory (pass --vocab FILE)", path=directory)
    return BertTokenizer.from_pretrained(directory)


def saved_settings(config: BertConfig) -> tuple[str | None, dict[str, Any]]:
    saved = config.extra.get(SETTINGS_KEY) or {}
    return saved.get("task"), dict(saved.get("settings") or {})


def merge_settings(given: TaskSettings, saved: dict[str, Any]) -> TaskSettings:
    """Saved settings, except where `given` differs from the defaults."""
    defaults = TaskSettings()
    known = {f.name for f in fields(TaskSettings)}
    merged = {key: value for key, value in saved.items() if key in known}
    for f in fields(TaskSettings):
        value = getattr(given, f.name)
        if value != getattr(defaults, f.name) or f.name not in merged:
            merged[f.name] = value
    return build_dataclass(TaskSettings, merged)


def task_of(directory: Path, config: BertConfig, requested: str | None) -> Task:
    saved_task, _ = saved_settings(config)
    architectures = config.extra.get("architectures") or []
    inferred = saved_task or next((ARCHITECTURES[a] for a in architectures if a in ARCHITECTURES), None)
    if requested is not None and inferred is not None and requested != inferred:
        raise BertforgeError(f"the model was fine-tuned for task {inferred!r}, not {requested!r}", path=directory)
    name = requested or inferred
    if name is None:
        raise BertforgeError("cannot tell the task of this model (no fine-tuned head); pass --task", path=directory)
    return get_task(name)


def load_finetuned(directory: str | Path, task_name: str | None, settings: TaskSettings,
                   device: str = "auto") -> tuple[Task, Any, Any, TaskSettings]:
    """A fine-tuned model directory -> (task, model on its device, tokenizer, settings)."""
    directory = Path(directory)
    config = BertConfig.from_json_file(directory / "config.json")
    task = task_of(directory, config, task_name)
    if task.name != "qa" and not config.id2label:
        raise BertforgeError("config.json has no id2label: this is not a fine-tuned classifier", path=directory)
    _, saved = saved_settings(config)
    settings = merge_settings(settings, saved)
    model = task.model_class.from_pretrained(directory, config=config)
    model.to(_device(device))
    return task, model, load_tokenizer(directory), settings


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def finetune(*, task_name: str, model_dir: Path | None, train_path: Path, dev_path: Path, out_dir: Path,
             settings: TaskSettings, train_config: Any, test_path: Path | None = None, epochs: float = 3.0,
             max_steps: int | None = None, patience: int = 0, eval_batch_size: int = 64,
             init: str = "pretrained", preset: str | None = None, vocab: Path | None = None,
             group_by_length: bool = True, resolved_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune and return {"dev": metrics, "test": metrics?, "steps", "train_seconds", ...}."""
    import dataclasses

    import torch

    from bertforge.tasks.common import FeatureBatches
    from bertforge.train import Trainer

    task = get_task(task_name)
    out_dir = Path(out_dir)
    torch.manual_seed(train_config.seed)

    if model_dir is not None:
        tokenizer = load_tokenizer(model_dir, vocab)
        base_config = BertConfig.from_json_file(model_dir / "config.json")
    elif preset is not None:
        if vocab is None:
            raise BertforgeError("a model built from a preset needs --vocab FILE")
        tokenizer = load_tokenizer(Path("."), vocab)
        base_config = BertConfig.from_preset(preset, vocab_size=tokenizer.vocab_size)
        init = "random"
    else:
        raise BertforgeError("pass --model DIR (a pretrained model) or --preset NAME --vocab FILE (random init)")
    if base_config.vocab_size < tokenizer.vocab_size:
        raise BertforgeError(f"the vocab has {tokenizer.vocab_size} tokens but the model only {base_config.vocab_size}")

    train_examples = task.read(train_path, settings)
    dev_examples = task.read(dev_path, settings)
    labels = task.label_names(train_examples, settings)
    config = task.configure(base_config, labels, settings)
    config.extra = {**config.extra, SETTINGS_KEY: {"task": task.name, "settings": to_plain(settings)}}
    config.extra.pop("architectures", None)
    task.check_labels(dev_examples, config, dev_path)
    test_examples = None
    if test_path is not None:
        test_examples = task.read(test_path, settings)
        task.check_labels(test_examples, config, test_path)

    if init == "random":
        model = task.model_class(config)
    else:
        assert model_dir is not None
        model = task.model_class.from_pretrained(model_dir, config=config)

    features = task.featurize(train_examples, tokenizer, config, settings, training=True)
    micro_batch_size, accumulation = train_config.accumulation(1)
    batches = FeatureBatches(features, micro_batch_size, tokenizer.pad_token_id, shuffle=True,
                             seed=train_config.seed, group_by_length=group_by_length)
    steps_per_epoch = math.ceil(len(batches) / accumulation)
    if max_steps is None:
        max_steps = max(1, math.ceil(epochs * steps_per_epoch))
    train_config = dataclasses.replace(train_config, max_steps=max_steps)

    out_dir.mkdir(parents=True, exist_ok=True)
    if resolved_options is not None:
        import yaml

        with atomic_open(out_dir / "config.yaml") as handle:
            yaml.safe_dump(resolved_options, handle, sort_keys=False, allow_unicode=True)

    primary = task.primary(config)  # type: ignore[attr-defined]
    tracker = BestTracker(out_dir / FINAL, primary, patience, tokenizer)
    dev_features = task.featurize(dev_examples, tokenizer, config, settings, training=False) \
        if task.name == "classify" else None

    def evaluate(model: Any) -> dict[str, float]:
        result = task.evaluate(model, tokenizer, dev_examples, settings, eval_batch_size, dev_features)
        return {f"dev_{name}": float(value) for name, value in result.metrics.items()
                if isinstance(value, (int, float))}

    def on_evaluate(step: int, metrics: dict[str, float], model: Any) -> bool:
        # The tracker's state rides in the trainer's checkpoints, so a resumed run keeps its best.
        tracker.load_state(trainer.run_state.get("best_on_dev"))
        stop = tracker.update(step, metrics.get(f"dev_{primary}", float("-inf")), model)
        trainer.run_state["best_on_dev"] = tracker.state()
        return stop

    # Only length grouping needs the fixed normalizer; random batches keep transformers' loss.
    objective = TaskObjective(task.name, labels_per_row(features) if group_by_length else None)
    trainer = Trainer(model, train_config, out_dir, batches, objective, evaluate=evaluate,
                      tokenizer=tokenizer, on_evaluate=on_evaluate, evaluate_at_start=False)
    started = time.perf_counter()
    result = trainer.fit()
    train_seconds = time.perf_counter() - started
    if tracker.best_step is None:
        # No evaluation after a step happened (should not: the trainer evaluates at the end).
        tracker.save(trainer.bare_model)

    final_model = task.model_class.from_pretrained(out_dir / FINAL).to(trainer.context.device)
    summary: dict[str, Any] = {"task": task.name, "steps": result.step, "best_step": tracker.best_step,
                               "stopped_early": result.stopped_early, "train_seconds": train_seconds,
                               "train_features": len(features), "primary_metric": primary}
    dev_result = task.evaluate(final_model, tokenizer, dev_examples, settings, eval_batch_size, dev_features)
    summary["dev"] = dev_result.metrics
    write_predictions(out_dir / "dev_predictions.jsonl", dev_result.predictions)
    if test_examples is not None:
        test_result = task.evaluate(final_model, tokenizer, test_examples, settings, eval_batch_size)
        summary["test"] = test_result.metrics
        write_predictions(out_dir / "test_predictions.jsonl", test_result.predictions)
    atomic_write_json(out_dir / "results.json", summary)
    return summary


class BestTracker:
    """Keeps the best model on dev in `directory` and counts evaluations without improvement."""

    def __init__(self, directory: Path, metric: str, patience: int, tokenizer: Any):
        self.directory = directory
        self.metric = metric
        self.patience = patience
        self.tokenizer = tokenizer
        self.best = float("-inf")
        self.best_step: int | None = None
        self.stale = 0

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "stale": self.stale}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state:
            self.best, self.best_step, self.stale = float(state["best"]), state["best_step"], int(state["stale"])

    def update(self, step: int, value: float, model: Any) -> bool:
        """Record one evaluation; True means stop (patience exhausted)."""
        if value > self.best or self.best_step is None:
            self.best, self.best_step, self.stale = value, step, 0
            self.save(model)
            return False
        self.stale += 1
        return self.patience > 0 and self.stale >= self.patience

    def save(self, model: Any) -> None:
        temporary = self.directory.with_name(f".{self.directory.name}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        model.save_pretrained(temporary, tokenizer=self.tokenizer)
        replace_directory(temporary, self.directory)


def write_predictions(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def evaluate_file(*, model_dir: Path, task_name: str | None, data_path: Path, settings: TaskSettings,
                  batch_size: int = 64, device: str = "auto") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    task, model, tokenizer, settings = load_finetuned(model_dir, task_name, settings, device)
    examples = task.read(data_path, settings)
    task.check_labels(examples, model.config, data_path)
    result = task.evaluate(model, tokenizer, examples, settings, batch_size)
    return result.metrics, result.predictions


def predict(*, model_dir: Path, task_name: str | None, settings: TaskSettings, texts: list[str] | None = None,
            input_path: Path | None = None, context: str | None = None, text_pair: str | None = None,
            batch_size: int = 64, device: str = "auto") -> list[dict[str, Any]]:
    task, model, tokenizer, settings = load_finetuned(model_dir, task_name, settings, device)
    if input_path is not None:
        if texts:
            raise BertforgeError("pass either texts or --input FILE, not both")
        inputs = task.read_inputs(input_path, settings)
    elif texts:
        inputs = task.inputs_from_texts(texts, settings, context if task.name == "qa" else text_pair)
    else:
        raise BertforgeError("nothing to predict: pass texts or --input FILE")
    return task.predict(model, tokenizer, inputs, settings, batch_size)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False), file=sys.stdout, flush=True)
