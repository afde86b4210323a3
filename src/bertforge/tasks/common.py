"""Pieces every fine-tuning task shares: reading text files, task settings, packed features,
dynamically padded and length-grouped batches, running a model over features, and the
`Task` interface that `classify`, `ner` and `qa` implement.

Features are stored packed: the token ids of all features concatenated in one int32 array
with a start offset per feature. A batch is gathered from it with one fancy-index (no loop
over rows or tokens), padded only to the longest feature in the batch. Training batches are
length-grouped as transformers' `LengthGroupedSampler` does it: shuffle, cut into mega-batches
of 50 batches, sort each mega-batch by length, split it into batches, then shuffle the batches,
so that a batch wastes little on padding yet the order stays random.
"""

from __future__ import annotations

import contextlib
import math
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from bertforge.config import IGNORE_INDEX
from bertforge.errors import BertforgeError
from bertforge.tasks.settings import TaskSettings

if TYPE_CHECKING:
    import torch

MEGABATCH_FACTOR = 50
"""Batches per mega-batch when grouping by length (transformers' LengthGroupedSampler uses 50)."""


# -- reading files ----------------------------------------------------------------------------


def read_text(path: str | Path, what: str = "data file") -> str:
    """The whole file as text: UTF-8 with an optional byte-order mark; CRLF becomes LF."""
    path = Path(path)
    if path.is_dir():
        raise BertforgeError(f"is a directory, expected a {what}", path=path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BertforgeError(f"{what} not found", path=path) from None
    except OSError as error:
        raise BertforgeError(f"cannot read {what}: {error.strerror}", path=path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BertforgeError(f"{what} is not UTF-8 (bytes 0x{data[error.start:error.end].hex()})",
                             path=path, line=line) from None
    if not text.strip():
        raise BertforgeError(f"{what} is empty", path=path)
    return text.replace("\r\n", "\n")


def read_lines(path: str | Path, what: str = "data file") -> list[str]:
    """Lines without their line ends. Only `\\n` (and `\\r\\n`) end a line: a stray `\\r` or
    U+2028 inside a sentence stays part of it, as csv/TSV readers in GLUE treat them."""
    lines = read_text(path, what).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def is_cjk(character: str) -> bool:
    """A CJK ideograph, as BERT's BasicTokenizer defines them (each becomes its own token)."""
    code = ord(character)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2B73F or 0x2B740 <= code <= 0x2B81F or 0x2B820 <= code <= 0x2CEAF
            or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F)


def has_cjk(text: str) -> bool:
    return any(is_cjk(character) for character in text)


def sorted_labels(labels: Sequence[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when they are all integers, else by name."""
    distinct = set(labels)
    if all(_is_integer(label) for label in distinct):
        return sorted(distinct, key=lambda label: int(label))
    return sorted(distinct)


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def warn(message: str) -> None:
    """A user-facing warning (the CLI prints it as `warning: <message>`)."""
    warnings.warn(message, UserWarning, stacklevel=3)


def is_punctuation(character: str) -> bool:
    """BERT's definition: ASCII symbols plus every Unicode P* category."""
    code = ord(character)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(character).startswith("P")


# -- packed features --------------------------------------------------------------------------


@dataclass
class Features:
    """Tokenized features, packed.

    `input_ids` and `token_type_ids` hold every feature's tokens back to back (int32);
    feature i spans `starts[i]:starts[i] + lengths[i]`. `token_labels`, when present, is packed
    the same way (IGNORE_INDEX where no label applies). `columns` holds one value per feature
    (a class id, a regression target, an answer's start and end token, ...).
    `example_index[i]` is the example feature i came from (several for long inputs).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    example_index: np.ndarray
    token_labels: np.ndarray | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def pack(cls, input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]],
             example_index: Sequence[int], token_labels: Sequence[np.ndarray] | None = None,
             columns: dict[str, Sequence[Any]] | None = None) -> "Features":
        lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
        starts = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths):
            np.cumsum(lengths[:-1], out=starts[1:])
        flat_ids = _concatenate(input_ids, np.int32)
        flat_types = _concatenate(token_type_ids, np.int8)
        flat_labels = None if token_labels is None else _concatenate(token_labels, np.int32)
        packed_columns = {name: np.asarray(values) for name, values in (columns or {}).items()}
        return cls(flat_ids, flat_types, starts, lengths, np.asarray(example_index, dtype=np.int64),
                   flat_labels, packed_columns)

    def tokens(self, index: int) -> np.ndarray:
        start = self.starts[index]
        return self.input_ids[start:start + self.lengths[index]]

    def labels_of(self, index: int) -> np.ndarray:
        assert self.token_labels is not None
        start = self.starts[index]
        return self.token_labels[start:start + self.lengths[index]]


def _concatenate(rows: Sequence[Sequence[int]] | Sequence[np.ndarray], dtype: Any) -> np.ndarray:
    if not len(rows):
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(row, dtype=dtype) for row in rows])


def collate(features: Features, indices: np.ndarray, pad_token_id: int) -> dict[str, "torch.Tensor"]:
    """Gather features `indices` into (B, T) tensors, T = the longest of them (dynamic padding).

    One gather over the packed arrays: positions (B, T) = starts[:, None] + arange(T); the
    padded tail reads any valid index and is then overwritten by the padding value.
    """
    import torch

    indices = np.asarray(indices, dtype=np.int64)
    lengths = features.lengths[indices]  # (B,)
    width = int(lengths.max()) if len(lengths) else 0
    offsets = np.arange(width, dtype=np.int64)  # (T,)
    mask = offsets[None, :] < lengths[:, None]  # (B, T)
    positions = features.starts[indices][:, None] + np.minimum(offsets[None, :], lengths[:, None] - 1)
    input_ids = np.where(mask, features.input_ids[positions], pad_token_id)
    token_type_ids = np.where(mask, features.token_type_ids[positions], 0)
    batch = {
        "input_ids": torch.from_numpy(input_ids.astype(np.int64)),
        "token_type_ids": torch.from_numpy(token_type_ids.astype(np.int64)),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
    }
    if features.token_labels is not None:
        labels = np.where(mask, features.token_labels[positions], IGNORE_INDEX)
        batch["labels"] = torch.from_numpy(labels.astype(np.int64))
    for name, values in features.columns.items():
        selected = values[indices]
        if selected.dtype.kind == "f":
            batch[name] = torch.from_numpy(selected.astype(np.float32))
        else:
            batch[name] = torch.from_numpy(selected.astype(np.int64))
    return batch


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                group_by_length: bool = True, drop_last: bool = False) -> list[np.ndarray]:
    """Index arrays, one per batch.

    With `rng` (training): shuffled; grouped by length when asked (see the module docstring).
    Without (evaluation): sorted by length, longest first, so padding is minimal and the first
    batch shows at once whether memory suffices.
    """
    count = len(lengths)
    if rng is None:
        order = np.argsort(-lengths, kind="stable")
        return _split(order, batch_size, drop_last)
    order = rng.permutation(count)
    if group_by_length:
        megabatch = batch_size * MEGABATCH_FACTOR
        pieces = []
        for begin in range(0, count, megabatch):
            chunk = order[begin:begin + megabatch]
            pieces.append(chunk[np.argsort(-lengths[chunk], kind="stable")])
        order = np.concatenate(pieces) if pieces else order
    batches = _split(order, batch_size, drop_last)
    if group_by_length:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _split(order: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    batches = [order[begin:begin + batch_size] for begin in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class FeatureBatches:
    """Iterable of padded training batches over `Features`, reshuffled per epoch.

    The order of epoch e is a pure function of (seed, e), so `state_dict()` = {epoch, position}
    resumes exactly without replaying, like `bertforge.data.PretrainingBatches`.
    """

    def __init__(self, features: Features, batch_size: int, pad_token_id: int, *, shuffle: bool = True,
                 seed: int = 0, group_by_length: bool = True, drop_last: bool = False):
        if batch_size <= 0:
            raise BertforgeError(f"batch size must be positive, got {batch_size}")
        if len(features) == 0:
            raise BertforgeError("no training features (is the training file empty?)")
        self.features = features
        self.batch_size = batch_size
        self.pad_token_id = pad_token_id
        self.shuffle = shuffle
        self.seed = seed
        self.group_by_length = group_by_length
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0

    def _order(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        return batch_order(self.features.lengths, self.batch_size, rng, self.group_by_length, self.drop_last)

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.features) // self.batch_size
        return math.ceil(len(self.features) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self) -> Iterator[dict[str, "torch.Tensor"]]:
        order = self._order(self.epoch)
        while self.position < len(order):
            indices = order[self.position]
            self.position += 1
            yield collate(self.features, indices, self.pad_token_id)
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


# -- running a model ------------------------------------------------------------------------


def model_device(model: "torch.nn.Module") -> "torch.device":
    return next(model.parameters()).device


def run_model(model: "torch.nn.Module", features: Features, pad_token_id: int, batch_size: int,
              collect: Callable[[Any, dict[str, "torch.Tensor"]], dict[str, "torch.Tensor"]],
              autocast_dtype: "torch.dtype | None" = None) -> dict[str, list[np.ndarray]]:
    """Run `model` over every feature (no labels, no grad); `collect(output, batch)` picks the
    (B, ...) tensors to keep. Returns, per collected name, one float32 array per feature in
    feature order, each cut to the feature's own length when the tensor has a T axis."""
    import torch

    device = model_device(model)
    was_training = model.training
    model.eval()
    results: dict[str, list[np.ndarray | None]] = {}
    try:
        with torch.inference_mode():
            for indices in batch_order(features.lengths, batch_size, None):
                batch = collate(features, indices, pad_token_id)
                inputs = {name: batch[name].to(device) for name in ("input_ids", "token_type_ids", "attention_mask")}
                # Without a dtype, any autocast the caller set (the trainer's bf16) stays in force.
                precision = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                             else contextlib.nullcontext())
                with precision:
                    output = model(**inputs)
                width = inputs["input_ids"].shape[1]
                for name, tensor in collect(output, batch).items():
                    values = tensor.float().cpu().numpy()
                    store = results.setdefault(name, [None] * len(features))
                    timed = values.ndim >= 2 and values.shape[1] == width
                    for row, index in enumerate(indices):
                        store[index] = values[row, :features.lengths[index]] if timed else values[row]
    finally:
        model.train(was_training)
    return {name: list(values) for name, values in results.items()}  # type: ignore[misc]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exponent = np.exp(shifted)
    return exponent / exponent.sum(axis=axis, keepdims=True)


# -- the task interface -----------------------------------------------------------------------


@dataclass
class Evaluation:
    """What `Task.evaluate` returns: the metrics and one prediction record per example."""

    metrics: dict[str, float]
    predictions: list[dict[str, Any]]


class Task:
    """One fine-tuning task. Subclasses fill in every method; see classify.py for the pattern.

    Flow at fine-tuning time: `read` the files -> `label_names` from the training examples ->
    `configure` the BertConfig (label maps, problem type) -> `featurize` -> train the
    `model_class` on the batches -> `evaluate` on dev (metrics + per-example predictions).
    At prediction time: `read_inputs` (a file of raw inputs) or `inputs_from_texts` ->
    `predict`.
    """

    name: str = ""
    model_class: type
    primary_metric: str = ""
    """The metric that picks the best checkpoint (higher is better)."""

    def read(self, path: str | Path, settings: TaskSettings) -> list[Any]:
        raise NotImplementedError

    def primary(self, config: Any) -> str:
        """The metric that picks the best checkpoint for this model (higher is better)."""
        return self.primary_metric

    def label_names(self, examples: list[Any], settings: TaskSettings) -> list[str] | None:
        """The label set learned from the training examples (None: the task has no label map)."""
        raise NotImplementedError

    def configure(self, config: Any, labels: list[str] | None, settings: TaskSettings) -> Any:
        """The BertConfig for the head: `id2label`, `problem_type`."""
        raise NotImplementedError

    def check_labels(self, examples: list[Any], config: Any, path: str | Path) -> None:
        """Warn about gold labels the model cannot predict (unseen in training)."""

    def featurize(self, examples: list[Any], tokenizer: Any, config: Any, settings: TaskSettings,
                  training: bool) -> Features:
        raise NotImplementedError

    def evaluate(self, model: Any, tokenizer: Any, examples: list[Any], settings: TaskSettings,
                 batch_size: int = 64, features: Features | None = None) -> Evaluation:
        raise NotImplementedError

    def read_inputs(self, path: str | Path, settings: TaskSettings) -> list[Any]:
        """Raw inputs for `predict` from a file (labels, when present, are ignored)."""
        raise NotImplementedError

    def inputs_from_texts(self, texts: list[str], settings: TaskSettings, context: str | None = None) -> list[Any]:
        raise NotImplementedError

    def predict(self, model: Any, tokenizer: Any, inputs: list[Any], settings: TaskSettings,
                batch_size: int = 64) -> list[dict[str, Any]]:
        raise NotImplementedError


# -- tokenizing with offsets, word ids and windows ------------------------------------------


@dataclass
class Encoded:
    """One tokenized window: ids with [CLS]/[SEP], and per token its character offsets (into
    its own input text), word index (-1 for specials) and sequence (0, 1, or -1 for specials)."""

    ids: np.ndarray
    type_ids: np.ndarray
    offsets: np.ndarray
    """(T, 2) character [start, end) of each token in its input text."""
    word_ids: np.ndarray
    sequence_ids: np.ndarray
    sample: int
    """Index of the input this window came from (several windows per long input)."""


def encode_windows(tokenizer: Any, first: Sequence[Any], second: Sequence[str] | None = None, *,
                   max_length: int, stride: int = 0, pretokenized: bool = False,
                   overflow: bool = True, strategy: str = "longest_first", details: bool = True) -> list[Encoded]:
    """Tokenize a batch with the tokenizer (in parallel, in Rust) into windows of at most `max_length` tokens.

    `first` holds texts, or lists of words when `pretokenized`; `second` the paired texts. With
    `overflow`, an input longer than max_length yields several windows sharing `stride` tokens
    (of the truncated sequence: the second one under strategy "only_second"); without, only the
    first window is kept. Without `details`, offsets, word and sequence ids are left empty.
    """
    if not len(first):
        return []
    batch = tokenizer(list(first), None if second is None else list(second), max_length=max_length,
                      truncation=strategy, stride=stride if overflow else 0,
                      return_overflowing_tokens=overflow, is_split_into_words=pretokenized)
    rows = batch.encodings
    samples = batch["overflow_to_sample_mapping"] if overflow else range(len(rows))
    empty = np.zeros(0, dtype=np.int64)
    windows: list[Encoded] = []
    for sample, part in zip(samples, rows):
        ids = np.asarray(part.ids, dtype=np.int32)
        if not details:
            windows.append(Encoded(ids, np.asarray(part.type_ids, dtype=np.int8), empty.reshape(0, 2),
                                   empty, empty, sample))
            continue
        windows.append(Encoded(
            ids, np.asarray(part.type_ids, dtype=np.int8), np.asarray(part.offsets, dtype=np.int64).reshape(-1, 2),
            _none_to_minus_one(part.word_ids), _none_to_minus_one(part.sequence_ids), sample))
    return windows


def _none_to_minus_one(values: list[int | None]) -> np.ndarray:
    # float conversion turns None into NaN in C, avoiding a Python loop over tokens.
    array = np.asarray(values, dtype=np.float64)
    return np.nan_to_num(array, nan=-1.0).astype(np.int64)
