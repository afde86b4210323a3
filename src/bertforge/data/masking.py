"""Masked-LM masking: pure functions of the token ids and a `numpy.random.Generator`.

google-research/bert `create_masked_lm_predictions`: choose 15% of the tokens (at most
`max_predictions_per_seq`), in a random order of whole words when whole-word masking is on;
of the chosen tokens 80% become [MASK], 10% a random token and 10% stay as they are. WHY
(paper, appendix A.1): the model must keep a distributional representation of every token,
since at fine-tuning time it never sees [MASK]; the random 10% (1.5% of all tokens) is too
little to harm its language understanding.

Whole-word masking: the pieces of one word are masked together (google's
`do_whole_word_mask`, in English a word is a token and its `##` continuations). For Chinese
(Cui et al., Chinese BERT-wwm), the characters of one segmented word count as one word;
preparation stores those word starts, because `##` alone marks nothing in Chinese.

Reproducibility: the loader calls these with `instance_generator(seed, epoch, index)`, so a
mask depends on nothing but (seed, epoch, instance index): resuming and changing the number of
ranks give the same masks without replaying any random stream.

Departures from google-research/bert:
- The number to mask is 15% of the *maskable* tokens (google: of all tokens, [CLS] and [SEP]
  included), so the rate over real text is 15% at every length.
- Special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]) are never chosen, and the random
  replacement is drawn among non-special tokens only (google may put [CLS] or [PAD] there).
- [UNK] is not masked: predicting it teaches nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertforge.config import IGNORE_INDEX
from bertforge.errors import BertforgeError

# Domain tags keep the random streams of different purposes apart for the same seed.
MASK_STREAM = 0x6D61736B  # "mask"
ORDER_STREAM = 0x6F726472  # "ordr"
PREPARE_STREAM = 0x70726570  # "prep"
STATIC_MASK_STREAM = 0x7374616D  # "stam"


def instance_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that masks instance `index` in `epoch`: a pure function of its arguments."""
    return np.random.default_rng([MASK_STREAM, seed, epoch, index])


@dataclass
class MaskingConfig:
    """How the masked-LM targets are chosen (google-research/bert's flags)."""

    masked_lm_prob: float = 0.15
    """Fraction of the maskable tokens to predict."""
    max_predictions_per_seq: int | None = None
    """Cap on predictions per sequence; None: ceil(max_seq_length * masked_lm_prob) (20 for 128)."""
    mask_token_prob: float = 0.8
    """Of the chosen tokens, the fraction replaced by [MASK]."""
    random_token_prob: float = 0.1
    """Of the chosen tokens, the fraction replaced by a random token (the rest stay unchanged)."""
    whole_word_mask: bool | None = None
    """Mask whole words; None: as the data was prepared (`--whole-word-mask`)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise BertforgeError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob!r}")
        for name in ("mask_token_prob", "random_token_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BertforgeError(f"{name} must be in [0, 1], got {value!r}")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            raise BertforgeError("mask_token_prob + random_token_prob must be at most 1")
        if self.max_predictions_per_seq is not None and self.max_predictions_per_seq < 1:
            raise BertforgeError(f"max_predictions_per_seq must be positive, got {self.max_predictions_per_seq!r}")

    def max_predictions(self, max_seq_length: int) -> int:
        if self.max_predictions_per_seq is not None:
            return self.max_predictions_per_seq
        return max(1, math.ceil(max_seq_length * self.masked_lm_prob))


@dataclass(frozen=True)
class VocabTables:
    """Per-vocab lookups the masking needs, built once from the vocab's tokens."""

    special: np.ndarray
    """(V,) bool: never masked, never a random replacement."""
    continuation: np.ndarray
    """(V,) bool: a `##` piece, which continues the word before it."""
    replacement_ids: np.ndarray
    """Ids a chosen token may be replaced by (every non-special id)."""
    mask_token_id: int

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], special_ids: Sequence[int], mask_token_id: int) -> "VocabTables":
        special = np.zeros(len(tokens), dtype=bool)
        special[list(special_ids)] = True
        continuation = np.fromiter((token.startswith("##") and len(token) > 2 for token in tokens),
                                   dtype=bool, count=len(tokens))
        return cls(special=special, continuation=continuation,
                   replacement_ids=np.flatnonzero(~special), mask_token_id=int(mask_token_id))


def choose_positions(input_ids: np.ndarray, *, tables: VocabTables, rng: np.random.Generator,
                     masked_lm_prob: float, max_predictions: int, whole_word: bool,
                     word_starts: np.ndarray | None = None) -> np.ndarray:
    """Sorted positions to predict in one sequence.

    Args:
        input_ids: (T,) token ids, special tokens included.
        word_starts: (T,) bool, True where a word begins (stored for Chinese); None: derived from
            `##` continuations. Only used with `whole_word`.
    """
    candidates = np.flatnonzero(~tables.special[input_ids])
    if candidates.size == 0:
        return candidates
    num_to_predict = min(max_predictions, max(1, int(round(candidates.size * masked_lm_prob))))
    if not whole_word:
        order = rng.permutation(candidates.size)
        return np.sort(candidates[order[:num_to_predict]])
    if word_starts is None:
        starts = ~tables.continuation[input_ids[candidates]]
    else:
        starts = word_starts[candidates].astype(bool)
    # A candidate that does not follow the previous candidate (a special token lies between)
    # starts a word whatever its form: a `##` piece right after [SEP] belongs to no word of A.
    starts[0] = True
    starts[1:] |= candidates[1:] != candidates[:-1] + 1
    word_begin = np.flatnonzero(starts)
    word_end = np.append(word_begin[1:], candidates.size)
    chosen: list[np.ndarray] = []
    total = 0
    for word in rng.permutation(word_begin.size):
        size = int(word_end[word] - word_begin[word])
        # WHY (google): a word that would overshoot the budget is skipped, not cut: whole-word
        # masking must never mask part of a word. Smaller words later in the order may fit.
        if total + size > num_to_predict:
            continue
        chosen.append(candidates[word_begin[word]:word_end[word]])
        total += size
        if total == num_to_predict:
            break
    if not chosen:
        return candidates[:0]
    return np.sort(np.concatenate(chosen))


def apply_mask(input_ids: np.ndarray, positions: np.ndarray, *, tables: VocabTables,
               rng: np.random.Generator, mask_token_prob: float = 0.8,
               random_token_prob: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(masked ids (T,), labels (T,) with IGNORE_INDEX where nothing is predicted)."""
    masked = np.array(input_ids, dtype=np.int64, copy=True)
    labels = np.full(masked.shape, IGNORE_INDEX, dtype=np.int64)
    if positions.size == 0:
        return masked, labels
    labels[positions] = masked[positions]
    draw = rng.random(positions.size)
    to_mask = positions[draw < mask_token_prob]
    to_random = positions[(draw >= mask_token_prob) & (draw < mask_token_prob + random_token_prob)]
    masked[to_mask] = tables.mask_token_id
    if to_random.size:
        masked[to_random] = tables.replacement_ids[rng.integers(tables.replacement_ids.size, size=to_random.size)]
    return masked, labels


def mask_sequence(input_ids: np.ndarray, *, tables: VocabTables, rng: np.random.Generator,
                  config: MaskingConfig, max_predictions: int, whole_word: bool,
                  word_starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Choose and apply the mask of one sequence: (masked ids (T,), labels (T,))."""
    positions = choose_positions(input_ids, tables=tables, rng=rng, masked_lm_prob=config.masked_lm_prob,
                                 max_predictions=max_predictions, whole_word=whole_word,
                                 word_starts=word_starts)
    return apply_mask(input_ids, positions, tables=tables, rng=rng, mask_token_prob=config.mask_token_prob,
                      random_token_prob=config.random_token_prob)
