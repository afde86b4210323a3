"""Text classification and regression: single sentences or pairs, any number of labels.

Reader: GLUE-style TSV with a header (SST-2, RTE, and MRPC's original msr_paraphrase files with
their byte-order mark and CRLF), CSV and JSONL with configurable columns (ChnSentiCorp,
waimai_10k), and headerless `text<TAB>label` (THUCNews). TSV fields are split on tabs with no
quoting, as GLUE's own reader does, so MRPC's quote characters stay part of the text.
Settings (`ClassifySettings`): format, text_column, text_pair_column, label_column, label_names,
problem_type, max_length. `label_names` names labels written as class ids (ChnSentiCorp's 0/1,
THUCNews's 0-9 with its class.txt), so that the model's label map and its predictions say
"positive" or "sports" rather than "1" or "7".

Head: pooler -> dropout -> linear, as in the BERT paper and transformers'
BertForSequenceClassification (whose checkpoint layout it shares). Loss: cross-entropy over the
labels, or mean squared error for regression (one output).

Metrics: accuracy, macro-F1 and Matthews correlation (the multi-class form that scikit-learn
computes) for labels; Pearson, Spearman (ties share their average rank) and MSE for regression.
A gold label unseen in training is kept as its own class in the metrics, so it always counts
as an error, and triggers one warning naming the file and line.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertforge.config import IGNORE_INDEX, BertConfig
from bertforge.errors import BertforgeError
from bertforge.model import BertHeadModel, BertModel
from bertforge.tasks.features import Features
from bertforge.tasks.reading import read_lines, read_text, sorted_labels, warn
from bertforge.tasks.registry import register
from bertforge.tasks.running import run_model, softmax
from bertforge.tasks.settings import TaskSettings
from bertforge.tasks.task import Evaluation, ServeApi, ServeCall, Task
from bertforge.tasks.windows import encode_windows

TEXT_COLUMNS = ("sentence", "sentence1", "text", "review", "content", "#1 String", "question1", "premise",
                "question")
PAIR_COLUMNS = ("sentence2", "#2 String", "question2", "hypothesis")
LABEL_COLUMNS = ("label", "Quality", "class", "gold_label", "score", "labels")


@dataclass
class ClassifySettings(TaskSettings):
    """How classification reads its files (`format`: auto | tsv | csv | jsonl | text_label
    (headerless `text<TAB>label`, THUCNews) | lines; `auto` decides by extension and first line)."""

    text_column: str | None = None
    """The column (name, or 0-based index for headerless files) holding the text;
    None picks the first of sentence, sentence1, text, review, content, #1 String, question1."""
    text_pair_column: str | None = None
    """The second text of a pair; None picks sentence2, #2 String, question2, hypothesis
    when present. The string "none" forces single sentences."""
    label_column: str | None = None
    """The label column; None picks label, Quality, class, gold_label, score."""
    label_names: list[str] | None = None
    """Names for labels written as class ids 0..N-1 (ChnSentiCorp's 0/1; THUCNews's 0-9, named in
    id order by its class.txt): id i is read as the i-th name (a label that is already a name stays),
    and the model's classes are these names in this order, seen in training or not. A label that is
    neither is an error naming its file and line. None: labels as written."""
    problem_type: Literal["auto", "single_label_classification", "regression"] = "auto"
    """`auto` means regression when every training label is a number with a decimal point."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_names is None:
            return
        names = [str(name).strip() for name in self.label_names]
        if len(names) < 2:
            raise BertforgeError(f"settings.label_names needs two or more names, got {names!r}")
        if not all(names):
            raise BertforgeError("settings.label_names holds an empty name")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise BertforgeError(f"settings.label_names repeats {', '.join(map(repr, repeated))}")
        if self.problem_type == "regression":
            raise BertforgeError("settings.label_names names classes; it cannot go with problem_type regression")
        self.label_names = names


# -- the head -------------------------------------------------------------------------------


@dataclass
class ClassifierOutput:
    loss: torch.Tensor | None
    """Cross-entropy (or MSE for regression) when labels were given."""
    logits: torch.Tensor
    """(B, num_labels) for sequences; (B, T, num_labels) for tokens."""
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def classifier_dropout(config: BertConfig) -> float:
    return config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout


def is_regression(config: BertConfig) -> bool:
    return config.problem_type == "regression" or (config.problem_type is None and config.num_labels == 1)


class BertForSequenceClassification(BertHeadModel):
    """BERT + pooler + dropout + linear classifier (one output for regression).

    The head reads no position but the pooler's [CLS], so on the unpadded path the last layer is
    computed for the [CLS] rows alone (`sparse_last_layer`; its attention still reads every
    token): the same logits, without the last layer's feed-forward for every other token.
    """

    architecture = "BertForSequenceClassification"
    hf_key_map = {"classifier": "classifier"}
    """Head module paths, ours -> Hugging Face's (read by bertforge.convert)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=True)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
                output_attentions: bool = False, output_hidden_states: bool = False) -> ClassifierOutput:
        """input_ids, token_type_ids, attention_mask (B, T); labels (B,): class ids (IGNORE_INDEX
        to skip) or float targets for regression."""
        no_position = torch.zeros_like(input_ids, dtype=torch.bool)  # (B, T): the pooled [CLS] only
        encoded = self.bert(input_ids, token_type_ids, attention_mask, wanted=no_position,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(encoded.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if is_regression(self.config):
                loss = F.mse_loss(logits.float().squeeze(-1), labels.float().view(-1))
            elif self.config.problem_type == "multi_label_classification":
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                loss = token_cross_entropy(logits, labels)
        return ClassifierOutput(loss, logits, encoded.hidden_states, encoded.attentions)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labels that are not IGNORE_INDEX; logits (..., C), labels (...).

    A batch with no label at all gives a zero that stays in the graph (plain CE would give NaN).
    """
    flat_logits = logits.float().reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    if not bool((flat_labels != IGNORE_INDEX).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)


# -- reading ----------------------------------------------------------------------------------


@dataclass
class TextExample:
    text: str
    text_pair: str | None
    label: str | None
    """The gold label as written (a class name, or a number for regression); None when unlabelled."""
    line: int
    """1-based line of the record in its file."""
    source: Path | None = None
    """The file the example was read from (for error messages)."""


def detect_format(path: Path, settings: ClassifySettings, first_line: str) -> str:
    if settings.format != "auto":
        if settings.format not in ("tsv", "csv", "jsonl", "text_label", "lines"):
            raise BertforgeError(f"unknown classification format {settings.format!r}; use auto, tsv, csv, "
                                 "jsonl, text_label or lines")
        return settings.format
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".tsv":
        return "tsv"
    fields = [field.strip() for field in first_line.split("\t")]
    known = set(TEXT_COLUMNS) | set(PAIR_COLUMNS) | set(LABEL_COLUMNS) | {"index", "idx", "id"}
    if len(fields) > 1 and any(field in known for field in fields):
        return "tsv"
    if len(fields) > 1:
        return "text_label"
    return "lines"


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, path: Path,
          required: bool) -> int | None:
    """The index of column `wanted` (a name or a 0-based index), or of the first default present."""
    if wanted is not None:
        if wanted in columns:
            return columns.index(wanted)
        if wanted.lstrip("-").isdigit() and -len(columns) <= int(wanted) < len(columns):
            return int(wanted) % len(columns)
        raise BertforgeError(f"no {what} column {wanted!r}; the columns are {', '.join(map(repr, columns))}",
                             path=path, line=1)
    for name in defaults:
        if name in columns:
            return columns.index(name)
    if required:
        raise BertforgeError(f"cannot tell which column holds the {what} (columns: "
                             f"{', '.join(map(repr, columns))}); set settings.{what.replace(' ', '_')}_column",
                             path=path, line=1)
    return None


def read_classification(path: str | Path, settings: ClassifySettings, labeled: bool = True) -> list[TextExample]:
    """Read a classification file. `labeled=False` reads the texts only (labels may be absent).
    With `settings.label_names`, class ids become their names."""
    examples = _read_examples(Path(path), settings, labeled)
    if settings.label_names is not None:
        name_labels(examples, settings.label_names, Path(path), strict=labeled)
    return examples


def name_labels(examples: list[TextExample], names: list[str], path: Path, strict: bool = True) -> None:
    """Replace class ids 0..len(names)-1 by their names in place; a label that is already a name
    stays. Any other label is an error (`strict`) or kept as written (texts read for prediction,
    where the label is not used)."""
    known = set(names)
    for example in examples:
        label = example.label
        if label is None or label in known:
            continue
        index = int(label) if label.isascii() and label.isdigit() else -1
        if 0 <= index < len(names):
            example.label = names[index]
        elif strict:
            raise BertforgeError(f"label {label!r} is neither a class id 0..{len(names) - 1} nor one of "
                                 f"settings.label_names ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})",
                                 path=path, line=example.line)


def _read_examples(path: Path, settings: ClassifySettings, labeled: bool) -> list[TextExample]:
    text = read_text(path)
    first_line = text.split("\n", 1)[0]
    kind = detect_format(path, settings, first_line)
    if kind == "jsonl":
        rows, header, first_row_line = _jsonl_rows(path, text), None, 1
    elif kind == "csv":
        rows, header = _csv_rows(path, text)
        first_row_line = 2
    elif kind == "tsv":
        lines = text.split("\n")
        header = [field.strip() for field in lines[0].split("\t")]
        rows = [(number, line.split("\t")) for number, line in enumerate(lines[1:], start=2) if line.strip()]
    elif kind == "text_label":
        header = None
        rows = [(number, line.split("\t")) for number, line in enumerate(read_lines(path), start=1) if line.strip()]
    else:
        return _nonempty([TextExample(line, None, None, number)
                          for number, line in enumerate(read_lines(path), start=1) if line.strip()], path)

    examples: list[TextExample] = []
    if kind == "jsonl":
        text_key = settings.text_column
        for number, record in rows:
            if text_key is None:
                text_key = next((name for name in TEXT_COLUMNS if name in record), None)
                if text_key is None:
                    raise BertforgeError(f"cannot tell which key holds the text (keys: {', '.join(record)}); "
                                         "set settings.text_column", path=path, line=number)
            pair_key = settings.text_pair_column
            if pair_key is None:
                pair_key = next((name for name in PAIR_COLUMNS if name in record), None)
            elif pair_key == "none":
                pair_key = None
            label_key = settings.label_column or next((name for name in LABEL_COLUMNS if name in record), None)
            examples.append(TextExample(
                _field(record, text_key, path, number), None if pair_key is None else _field(record, pair_key, path, number),
                _label(record.get(label_key) if label_key else None, labeled, path, number, label_key), number))
        return _nonempty(examples, path)

    if header is None:  # headerless text<TAB>label
        width = len(rows[0][1]) if rows else 2
        header = [str(index) for index in range(width)]
        text_index = _pick(header, settings.text_column or "0", (), "text", path, True)
        pair_index = None
        if settings.text_pair_column not in (None, "none"):
            pair_index = _pick(header, settings.text_pair_column, (), "text pair", path, True)
        label_index = _pick(header, settings.label_column or str(width - 1), (), "label", path, labeled)
    else:
        text_index = _pick(header, settings.text_column, TEXT_COLUMNS, "text", path, True)
        pair_index = None
        if settings.text_pair_column != "none":
            pair_index = _pick(header, settings.text_pair_column, PAIR_COLUMNS, "text pair", path, False)
        label_index = _pick(header, settings.label_column, LABEL_COLUMNS, "label", path, labeled)
    needed = max(index for index in (text_index, pair_index, label_index) if index is not None) + 1
    for number, fields in rows:
        if len(fields) != len(header) and len(fields) < needed:
            raise BertforgeError(f"expected {len(header)} fields, found {len(fields)}", path=path, line=number)
        label = fields[label_index].strip() if label_index is not None and label_index < len(fields) else None
        if labeled and label_index is not None and not label:
            raise BertforgeError("empty label", path=path, line=number)
        examples.append(TextExample(fields[text_index].strip(),
                                    None if pair_index is None else fields[pair_index].strip(), label, number))
    return _nonempty(examples, path, first_row_line if kind == "csv" else 2)


def _nonempty(examples: list[TextExample], path: Path, line: int | None = None) -> list[TextExample]:
    if not examples:
        raise BertforgeError("no examples in the file (only a header?)", path=path, line=line)
    for example in examples:
        example.source = path
    return examples


def _field(record: dict[str, Any], key: str, path: Path, number: int) -> str:
    if key not in record:
        raise BertforgeError(f"record has no key {key!r} (keys: {', '.join(record)})", path=path, line=number)
    value = record[key]
    if not isinstance(value, (str, int, float)):
        raise BertforgeError(f"{key!r} must be a string, got {type(value).__name__}", path=path, line=number)
    return str(value)


def _label(value: Any, labeled: bool, path: Path, number: int, key: str | None) -> str | None:
    if value is None:
        if labeled:
            raise BertforgeError(f"record has no label{f' {key!r}' if key else ''}; set settings.label_column",
                                 path=path, line=number)
        return None
    if isinstance(value, bool):
        return str(int(value))
    if not isinstance(value, (str, int, float)):
        raise BertforgeError(f"label must be a string or a number, got {type(value).__name__}", path=path,
                             line=number)
    return str(value).strip()


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BertforgeError(f"not valid JSON ({error.msg})", path=path, line=number) from None
        if not isinstance(record, dict):
            raise BertforgeError("each line must hold a JSON object", path=path, line=number)
        rows.append((number, record))
    return rows


def _csv_rows(path: Path, text: str) -> tuple[list[tuple[int, list[str]]], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    previous_end = 0
    try:
        for fields in reader:
            start = previous_end + 1  # a quoted field may span lines; report where the record starts
            previous_end = reader.line_num
            if header is None:
                header = [field.strip() for field in fields]
                continue
            if not fields or not any(field.strip() for field in fields):
                continue
            rows.append((start, fields))
    except csv.Error as error:
        raise BertforgeError(f"malformed CSV: {error}", path=path, line=reader.line_num) from None
    return rows, header or []


# -- metrics ----------------------------------------------------------------------------------


def accuracy(gold: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(gold == predicted)) if len(gold) else 0.0


def confusion(gold: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, C) where C[i, j] counts gold classes[i] predicted as classes[j]."""
    classes = np.union1d(gold, predicted)
    gold_index = np.searchsorted(classes, gold)
    predicted_index = np.searchsorted(classes, predicted)
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (gold_index, predicted_index), 1)
    return classes, matrix


def macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over every class that occurs in gold or predictions."""
    _, matrix = confusion(gold, predicted)
    true_positive = np.diag(matrix).astype(np.float64)
    predicted_count = matrix.sum(axis=0)
    gold_count = matrix.sum(axis=1)
    denominator = predicted_count + gold_count
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return float(f1.mean()) if len(f1) else 0.0


def matthews_correlation(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Matthews correlation; for more than two classes, Gorodkin's R_K (scikit-learn's form)."""
    _, matrix = confusion(gold, predicted)
    matrix = matrix.astype(np.float64)
    true_sum, predicted_sum = matrix.sum(axis=1), matrix.sum(axis=0)
    correct, samples = np.trace(matrix), matrix.sum()
    covariance = correct * samples - true_sum @ predicted_sum
    predicted_variance = samples ** 2 - predicted_sum @ predicted_sum
    true_variance = samples ** 2 - true_sum @ true_sum
    if predicted_variance * true_variance == 0:
        return 0.0
    return float(covariance / np.sqrt(true_variance * predicted_variance))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (scipy's rankdata 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    boundaries = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1], [True]])
    group_starts = np.flatnonzero(boundaries)
    group_ids = np.cumsum(boundaries[:-1]) - 1
    mean_rank = (group_starts[:-1] + group_starts[1:] - 1) / 2.0 + 1.0  # per group
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[group_ids]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def classification_metrics(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted),
            "mcc": matthews_correlation(gold, predicted)}


def regression_metrics(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    gold, predicted = np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    return {"pearson": pearson(gold, predicted), "spearman": spearman(gold, predicted),
            "mse": float(np.mean((gold - predicted) ** 2)) if len(gold) else 0.0}


# -- the task ---------------------------------------------------------------------------------


@register
class ClassifyTask(Task):
    name = "classify"
    help = "text classification or regression of single texts or pairs"
    settings_class = ClassifySettings
    model_class = BertForSequenceClassification
    primary_metric = "accuracy"
    onnx_outputs = ("logits",)
    serve_title = "classifier"

    def read(self, path: str | Path, settings: ClassifySettings) -> list[TextExample]:
        return read_classification(path, settings, labeled=True)

    def label_names(self, examples: list[TextExample], settings: ClassifySettings) -> list[str] | None:
        if settings.label_names is not None:
            return list(settings.label_names)
        labels = [example.label for example in examples if example.label is not None]
        if self._regression(labels, settings):
            for example in examples:
                _as_float(example)
            return None
        return sorted_labels(labels)

    @staticmethod
    def _regression(labels: list[str], settings: ClassifySettings) -> bool:
        if settings.problem_type != "auto":
            return settings.problem_type == "regression"
        try:
            [float(label) for label in labels]
        except ValueError:
            return False
        return any("." in label for label in labels)

    def configure(self, config: BertConfig, labels: list[str] | None, settings: ClassifySettings) -> BertConfig:
        if labels is None:
            return config.replace(id2label={0: "LABEL_0"}, problem_type="regression")
        if len(labels) < 2:
            raise BertforgeError(f"the training data has a single label ({labels[0]!r}); a classifier needs two or more")
        return config.replace(id2label=dict(enumerate(labels)), problem_type="single_label_classification")

    def primary(self, config: BertConfig) -> str:
        return "pearson" if is_regression(config) else "accuracy"

    def check_labels(self, examples: list[TextExample], config: BertConfig, path: str | Path) -> None:
        if is_regression(config):
            for example in examples:
                _as_float(example, path)
            return
        known = config.label2id
        unseen = [example for example in examples if example.label is not None and example.label not in known]
        if unseen:
            names = sorted({example.label for example in unseen if example.label is not None})
            warn(f"{path}:{unseen[0].line}: {len(unseen)} example(s) carry label(s) the model was not trained on "
                 f"({', '.join(map(repr, names[:5]))}); they count as errors in the metrics")

    def featurize(self, examples: list[TextExample], tokenizer: Any, config: BertConfig, settings: ClassifySettings,
                  training: bool) -> Features:
        pairs = None
        if any(example.text_pair is not None for example in examples):
            pairs = [example.text_pair or "" for example in examples]
        windows = encode_windows(tokenizer, [example.text for example in examples], pairs,
                                 max_length=settings.max_length, overflow=False, details=False)
        columns: dict[str, Any] = {}
        if all(example.label is not None for example in examples):
            if is_regression(config):
                columns["labels"] = np.array([_as_float(example) for example in examples], dtype=np.float32)
            else:
                known = config.label2id
                columns["labels"] = np.array([known.get(example.label, IGNORE_INDEX)  # type: ignore[arg-type]
                                              for example in examples], dtype=np.int64)
        return Features.pack([window.ids for window in windows], [window.type_ids for window in windows],
                             [window.sample for window in windows], columns=columns)

    def _logits(self, model: BertForSequenceClassification, features: Features, pad_token_id: int,
                batch_size: int) -> np.ndarray:
        outputs = run_model(model, features, pad_token_id, batch_size, lambda output, batch: {"logits": output.logits})
        return np.stack(outputs["logits"]) if outputs else np.zeros((0, model.config.num_labels))

    def evaluation_features(self, examples: list[TextExample], tokenizer: Any, config: BertConfig,
                            settings: ClassifySettings) -> Features:
        return self.featurize(examples, tokenizer, config, settings, training=False)

    def evaluate(self, model: BertForSequenceClassification, tokenizer: Any, examples: list[TextExample],
                 settings: ClassifySettings, batch_size: int = 64, features: Features | None = None) -> Evaluation:
        config = model.config
        if features is None:
            features = self.featurize(examples, tokenizer, config, settings, training=False)
        logits = self._logits(model, features, tokenizer.pad_token_id, batch_size)
        predictions = self._records(examples, logits, config)
        if is_regression(config):
            gold = np.array([_as_float(example) for example in examples])
            metrics = regression_metrics(gold, logits[:, 0])
        else:
            known = config.label2id
            # Unseen gold labels get ids past the model's classes: never predicted, always wrong.
            extra = {label: len(known) + index for index, label in
                     enumerate(sorted({e.label for e in examples if e.label not in known}))}  # type: ignore[misc]
            gold = np.array([known.get(e.label, extra.get(e.label, -1)) for e in examples])  # type: ignore[arg-type]
            metrics = classification_metrics(gold, logits.argmax(axis=-1))
        metrics["examples"] = float(len(examples))
        return Evaluation(metrics, predictions)

    def _records(self, examples: list[TextExample], logits: np.ndarray, config: BertConfig) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        if is_regression(config):
            for example, row in zip(examples, logits):
                records.append(_base_record(example) | {"score": float(row[0])})
            return records
        probabilities = softmax(logits.astype(np.float64))
        names = [config.id2label[index] for index in range(config.num_labels)]  # type: ignore[index]
        best = probabilities.argmax(axis=-1)
        for example, row, top in zip(examples, probabilities, best):
            records.append(_base_record(example) | {
                "label": names[top], "score": float(row[top]),
                "probabilities": {name: float(value) for name, value in zip(names, row)}})
        return records

    def read_inputs(self, path: str | Path, settings: ClassifySettings) -> list[TextExample]:
        """The texts of a file to predict on; a record whose text is empty is an error (as an
        empty text on the command line is: there is nothing to predict from)."""
        inputs = read_classification(path, settings, labeled=False)
        for example in inputs:
            if not example.text.strip():
                raise BertforgeError("the text is empty: nothing to predict from", path=path, line=example.line)
        return inputs

    def inputs_from_texts(self, texts: list[str], settings: ClassifySettings, *, context: str | None = None,
                          text_pair: str | None = None) -> list[TextExample]:
        return [TextExample(text, text_pair, None, index) for index, text in enumerate(texts, start=1)]

    def predict(self, model: BertForSequenceClassification, tokenizer: Any, inputs: list[TextExample],
                settings: ClassifySettings, batch_size: int = 64) -> list[dict[str, Any]]:
        unlabeled = [TextExample(example.text, example.text_pair, None, example.line) for example in inputs]
        features = self.featurize(unlabeled, tokenizer, model.config, settings, training=False)
        logits = self._logits(model, features, tokenizer.pad_token_id, batch_size)
        return self._records(unlabeled, logits, model.config)

    def serve_api(self) -> ServeApi:
        return _serve_api()

    def serve_inputs(self, body: Any, settings: ClassifySettings) -> ServeCall:
        paired = not isinstance(body.texts[0], str)  # the schema takes all strings or all pairs
        texts = [item.text for item in body.texts] if paired else list(body.texts)
        pairs = [item.text_pair for item in body.texts] if paired else [None] * len(texts)
        inputs = [TextExample(text, pair, None, index) for index, (text, pair) in enumerate(zip(texts, pairs), start=1)]
        # Paired and single inputs never share a batch: the features pair every text as soon as one has a pair.
        return ServeCall(inputs, (paired,), [texts, pairs] if paired else [texts])


def _pairs_or_texts(value: Any) -> str:
    """Which shape a request's `texts` has (its first item says), so errors speak of that one."""
    return "pairs" if isinstance(value, list) and value and isinstance(value[0], dict) else "texts"


@functools.cache
def _serve_api() -> ServeApi:
    """The request and prediction bodies of /v1/classify (pydantic, imported only when serving)."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictStr, Tag

    class TextPair(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: StrictStr
        text_pair: StrictStr = Field(description="the second text of the pair")

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        # One shape per request, written so the schema states it: a pair is one item, never two lists.
        texts: Annotated[Annotated[list[StrictStr], Field(min_length=1), Tag("texts")]
                         | Annotated[list[TextPair], Field(min_length=1), Tag("pairs")],
                         Discriminator(_pairs_or_texts)] = Field(description="texts to classify, or {text, text_pair} objects for a model trained on pairs "
                              "(all of one kind in a request)")

    class ClassifyPrediction(BaseModel):
        text: str
        text_pair: str | None = None
        label: str | None = Field(None, description="the best label (absent for regression)")
        score: float = Field(description="the best label's probability, or the regression value")
        probabilities: dict[str, float] | None = None

    return ServeApi(ClassifyRequest, ClassifyPrediction, "classify texts (or text pairs) with the fine-tuned classifier")


def _base_record(example: TextExample) -> dict[str, Any]:
    record: dict[str, Any] = {"text": example.text}
    if example.text_pair is not None:
        record["text_pair"] = example.text_pair
    if example.label is not None:
        record["gold"] = example.label
    return record


def _as_float(example: TextExample, path: str | Path | None = None) -> float:
    try:
        return float(example.label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BertforgeError(f"regression label {example.label!r} is not a number", path=path or example.source,
                             line=example.line) from None
