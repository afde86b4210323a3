"""Masking: 15% of tokens, 80/10/10, special tokens never, whole words together, pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from bertforge.data.masking import (
    MaskingConfig,
    VocabTables,
    apply_mask,
    choose_positions,
    instance_generator,
    mask_sequence,
)
from bertforge.errors import BertforgeError

WORDS = [f"w{index}" for index in range(200)]
PIECES = [f"##p{index}" for index in range(100)]
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PIECES
PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
FIRST_WORD, FIRST_PIECE = 5, 5 + len(WORDS)
TABLES = VocabTables.from_tokens(TOKENS, SPECIAL, MASK)


def random_sequence(rng, length):
    """[CLS] A [SEP] B [SEP] with words followed by 0-3 ## pieces, and a few [UNK]."""
    body = []
    while len(body) < length - 3:
        body.append(int(rng.integers(FIRST_WORD, FIRST_PIECE)) if rng.random() > 0.02 else UNK)
        for _ in range(int(rng.integers(0, 4))):
            body.append(int(rng.integers(FIRST_PIECE, len(TOKENS))))
    body = body[:length - 3]
    cut = len(body) // 2
    return np.array([CLS, *body[:cut], SEP, *body[cut:], SEP], dtype=np.int64)


def words_of(sequence):
    """(start, end) of each word: a non-special token and its ## continuations."""
    words, start = [], None
    for position, token in enumerate(sequence):
        continuation = token >= FIRST_PIECE
        if token in SPECIAL or not continuation:
            if start is not None:
                words.append((start, position))
            start = None if token in SPECIAL else position
    if start is not None:
        words.append((start, len(sequence)))
    return words


@pytest.mark.parametrize("whole_word", [False, True])
def test_fifteen_percent_and_80_10_10(whole_word):
    rng = np.random.default_rng(0)
    config = MaskingConfig()
    chosen = maskable = masked_token = random_token = unchanged = 0
    for index in range(3000):
        sequence = random_sequence(rng, int(rng.integers(20, 129)))
        masked, labels = mask_sequence(sequence, tables=TABLES, rng=instance_generator(0, 0, index),
                                       config=config, max_predictions=20, whole_word=whole_word)
        predicted = labels != -100
        assert np.array_equal(labels[predicted], sequence[predicted])
        chosen += predicted.sum()
        maskable += (~TABLES.special[sequence]).sum()
        masked_token += (masked[predicted] == MASK).sum()
        unchanged += (masked[predicted] == sequence[predicted]).sum()
        random_token += ((masked[predicted] != MASK) & (masked[predicted] != sequence[predicted])).sum()
    assert abs(chosen / maskable - 0.15) < 0.01
    assert abs(masked_token / chosen - 0.8) < 0.02
    assert abs(random_token / chosen - 0.1) < 0.02
    assert abs(unchanged / chosen - 0.1) < 0.02


def test_special_tokens_and_padding_are_never_masked_nor_inserted():
    rng = np.random.default_rng(1)
    config = MaskingConfig(masked_lm_prob=0.5, mask_token_prob=0.0, random_token_prob=1.0)
    for index in range(500):
        sequence = random_sequence(rng, 64)
        sequence = np.concatenate([sequence, np.full(10, PAD)])
        masked, labels = mask_sequence(sequence, tables=TABLES, rng=instance_generator(3, 1, index),
                                       config=config, max_predictions=100, whole_word=bool(index % 2))
        special = TABLES.special[sequence]
        assert (labels[special] == -100).all()
        assert np.array_equal(masked[special], sequence[special])
        # Random replacements are never special tokens either.
        assert not TABLES.special[masked[~special]].any()


def test_whole_word_masking_never_splits_a_word():
    rng = np.random.default_rng(2)
    for index in range(1000):
        sequence = random_sequence(rng, 128)
        _, labels = mask_sequence(sequence, tables=TABLES, rng=instance_generator(0, 0, index),
                                  config=MaskingConfig(), max_predictions=20, whole_word=True)
        predicted = labels != -100
        assert predicted.any()
        for start, end in words_of(sequence):
            assert predicted[start:end].all() or not predicted[start:end].any()


def test_whole_word_masking_with_stored_word_starts_chinese():
    # Characters with no ## at all: only the stored word starts say which go together.
    rng = np.random.default_rng(3)
    for index in range(500):
        body, starts = [], []
        while len(body) < 100:
            size = int(rng.integers(1, 5))  # a word of 1-4 characters
            body.extend(int(rng.integers(FIRST_WORD, FIRST_PIECE)) for _ in range(size))
            starts.extend([1] + [0] * (size - 1))
        sequence = np.array([CLS, *body[:100], SEP])
        word_starts = np.array([1, *starts[:100], 1], dtype=bool)
        _, labels = mask_sequence(sequence, tables=TABLES, rng=instance_generator(0, 0, index),
                                  config=MaskingConfig(), max_predictions=20, whole_word=True,
                                  word_starts=word_starts)
        predicted = labels != -100
        assert predicted.sum() > 0
        boundaries = np.flatnonzero(word_starts)
        for start, end in zip(boundaries, np.append(boundaries[1:], len(sequence))):
            assert predicted[start:end].all() or not predicted[start:end].any()


def test_continuation_right_after_sep_is_its_own_word():
    # B truncated from the front may start with a ## piece: it must not join A's last word.
    # With room for one token only, single-token words can be chosen: 4 and 5, never 1 or 2.
    sequence = np.array([CLS, FIRST_WORD, FIRST_PIECE, SEP, FIRST_PIECE + 1, FIRST_WORD + 1, SEP])
    chosen = set()
    for index in range(100):
        positions = choose_positions(sequence, tables=TABLES, rng=np.random.default_rng(index),
                                     masked_lm_prob=0.25, max_predictions=1, whole_word=True)
        chosen.add(tuple(positions.tolist()))
    assert chosen == {(4,), (5,)}


def test_cap_on_predictions():
    sequence = np.array([CLS, *range(FIRST_WORD, FIRST_WORD + 200), SEP])
    positions = choose_positions(sequence, tables=TABLES, rng=np.random.default_rng(0), masked_lm_prob=0.15,
                                 max_predictions=20, whole_word=False)
    assert len(positions) == 20 and len(set(positions.tolist())) == 20
    assert MaskingConfig().max_predictions(128) == 20
    assert MaskingConfig(max_predictions_per_seq=7).max_predictions(128) == 7


def test_masks_are_pure_functions_of_seed_epoch_index():
    sequence = random_sequence(np.random.default_rng(4), 100)
    config = MaskingConfig()

    def mask(seed, epoch, index):
        return mask_sequence(sequence, tables=TABLES, rng=instance_generator(seed, epoch, index), config=config,
                             max_predictions=20, whole_word=False)

    first = mask(0, 1, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, mask(0, 1, 7)))
    for other in (mask(1, 1, 7), mask(0, 2, 7), mask(0, 1, 8)):
        assert not np.array_equal(first[1], other[1])


def test_empty_or_all_special_sequence():
    masked, labels = mask_sequence(np.array([CLS, SEP]), tables=TABLES, rng=np.random.default_rng(0),
                                   config=MaskingConfig(), max_predictions=20, whole_word=True)
    assert masked.tolist() == [CLS, SEP] and (labels == -100).all()
    masked, labels = apply_mask(np.array([CLS, FIRST_WORD, SEP]), np.array([1]), tables=TABLES,
                                rng=np.random.default_rng(0), mask_token_prob=1.0, random_token_prob=0.0)
    assert masked.tolist() == [CLS, MASK, SEP] and labels.tolist() == [-100, FIRST_WORD, -100]


@pytest.mark.parametrize("kwargs", [dict(masked_lm_prob=0.0), dict(masked_lm_prob=1.5),
                                    dict(mask_token_prob=0.9, random_token_prob=0.2),
                                    dict(max_predictions_per_seq=0)])
def test_masking_config_checks_itself(kwargs):
    with pytest.raises(BertforgeError):
        MaskingConfig(**kwargs)
