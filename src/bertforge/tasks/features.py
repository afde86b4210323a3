"""Packed features, their collate, and dynamically padded, length-grouped training batches.

Features are stored packed: the token ids of all features concatenated in one int32 array
with a start offset per feature. A batch is gathered from it with one fancy-index (no loop
over rows or tokens), padded only to the longest feature in the batch. Training batches are
length-grouped as transformers' `LengthGroupedSampler` does it: shuffle, cut into mega-batches
of 50 batches, sort each mega-batch by length, split it into batches, then shuffle the batches,
so that a batch wastes little on padding yet the order stays random.

`FeatureBatches` and `bertforge.tasks.running.run_model` take any features object with a
`lengths` array (what batches are grouped and sorted by) and a collate function
`(features, indices, pad_token_id) -> {name: tensor}`: a task whose features are not single
(T,) rows supplies both (`Task.collate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from bertforge.config import IGNORE_INDEX
from bertforge.errors import BertforgeError

if TYPE_CHECKING:
    import torch

MEGABATCH_FACTOR = 50
"""Batches per mega-batch when grouping by length (transformers' LengthGroupedSampler uses 50)."""

Collate = Callable[[Any, np.ndarray, int], "dict[str, torch.Tensor]"]
"""(features, indices, pad_token_id) -> the batch of those features as tensors."""


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


collate_packed: Collate = collate
"""`collate` under a name that a `collate` parameter does not shadow."""


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
    """Iterable of padded training batches over features, reshuffled per epoch.

    `features` is `Features` or any object with `__len__` and `lengths`; `collate` turns some
    of them into a batch (default: `collate`, for `Features`).

    The order of epoch e is a pure function of (seed, e), so `state_dict()` = {epoch, position}
    resumes exactly without replaying, like `bertforge.data.PretrainingBatches`.
    """

    def __init__(self, features: Any, batch_size: int, pad_token_id: int, *, shuffle: bool = True,
                 seed: int = 0, group_by_length: bool = True, drop_last: bool = False, collate: Collate | None = None):
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
        self.collate = collate or collate_packed
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
            yield self.collate(self.features, indices, self.pad_token_id)
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
