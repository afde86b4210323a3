"""Tokenizing with offsets, word ids and overlapping windows, through the tokenizer's batch call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


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
