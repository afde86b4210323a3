"""NSP, SOP and packed-MLM instances on synthetic documents whose token ids say where they came
from: id = document * 1_000_000 + position of the token in its document."""

from __future__ import annotations

import numpy as np
import pytest

from bertforge.data.instances import (
    FAR_SENTENCES,
    IS_NEXT,
    RANDOM_NEXT,
    SWAPPED,
    create_packed_instances,
    create_pair_instances,
    split_long_sentences,
    truncate_seq_pair,
)

STRIDE = 1_000_000


def make_documents(rng, count, sentences=(1, 40), length=(1, 40)):
    documents = []
    for document in range(count):
        position = 0
        sentences_of_document = []
        for _ in range(int(rng.integers(*sentences))):
            size = int(rng.integers(*length))
            sentences_of_document.append([document * STRIDE + position + k for k in range(size)])
            position += size
        documents.append(sentences_of_document)
    return documents


def all_pairs(documents, rng, task="nsp", max_num_tokens=125, short_seq_prob=0.1):
    pairs = []
    for index in range(len(documents)):
        for pair in create_pair_instances(documents, index, max_num_tokens=max_num_tokens,
                                          short_seq_prob=short_seq_prob, rng=rng, task=task):
            pairs.append((index, pair))
    return pairs


def source(tokens):
    documents = {token // STRIDE for token in tokens}
    assert len(documents) == 1, "a segment must come from one document"
    positions = [token % STRIDE for token in tokens]
    assert positions == list(range(positions[0], positions[0] + len(positions))), "a segment is contiguous text"
    return documents.pop(), positions[0], positions[-1]


def test_nsp_is_half_random_and_random_b_comes_from_another_document():
    rng = np.random.default_rng(0)
    documents = make_documents(rng, 2000)
    pairs = all_pairs(documents, np.random.default_rng(1))
    assert len(pairs) >= 10_000
    labels = np.array([pair.label for _, pair in pairs])
    assert abs(labels.mean() - 0.5) < 0.02
    for index, pair in pairs:
        document_a, _, last_a = source(pair.tokens_a)
        document_b, first_b, _ = source(pair.tokens_b)
        assert document_a == index
        assert len(pair.tokens_a) + len(pair.tokens_b) <= 125
        assert pair.tokens_a and pair.tokens_b
        if pair.label == RANDOM_NEXT:
            assert document_b != document_a
        else:
            assert document_b == document_a and first_b > last_a


def test_nsp_stays_balanced_on_short_documents():
    # One to three sentences per document (like Gutenberg's paragraphs): google's forced random
    # B for a lone segment gives 74% random on this very input.
    rng = np.random.default_rng(2)
    documents = make_documents(rng, 7500, sentences=(1, 4), length=(2, 60))
    labels = np.array([pair.label for _, pair in all_pairs(documents, np.random.default_rng(3))])
    assert labels.size >= 10_000
    assert abs(labels.mean() - 0.5) < 0.02


def test_lengths_respect_max_and_short_targets_happen():
    rng = np.random.default_rng(4)
    documents = make_documents(rng, 200, length=(20, 60))
    for max_num_tokens in (13, 61, 125):
        pairs = all_pairs(documents, np.random.default_rng(5), max_num_tokens=max_num_tokens)
        lengths = np.array([len(pair.tokens_a) + len(pair.tokens_b) for _, pair in pairs])
        assert lengths.max() <= max_num_tokens
        assert lengths.min() >= 2
    lengths = np.array([len(p.tokens_a) + len(p.tokens_b) for _, p in all_pairs(documents, rng, short_seq_prob=0.0)])
    assert np.mean(lengths < 100) < np.mean(
        np.array([len(p.tokens_a) + len(p.tokens_b) for _, p in all_pairs(documents, rng, short_seq_prob=0.5)]) < 100)


def test_sop_pairs_are_consecutive_segments_in_or_out_of_order():
    rng = np.random.default_rng(6)
    documents = make_documents(rng, 300)
    pairs = all_pairs(documents, np.random.default_rng(7), task="sop")
    labels = np.array([pair.label for _, pair in pairs])
    assert abs(labels.mean() - 0.5) < 0.03
    for index, pair in pairs:
        document_a, first_a, last_a = source(pair.tokens_a)
        document_b, first_b, last_b = source(pair.tokens_b)
        assert document_a == document_b == index
        if pair.label == SWAPPED:
            assert first_a > last_b
        else:
            assert first_b > last_a


def test_single_document_draws_random_b_far_away_in_it():
    rng = np.random.default_rng(8)
    (document,) = make_documents(rng, 1, sentences=(400, 401), length=(5, 15))
    starts = {sentence[0] % STRIDE: index for index, sentence in enumerate(document)}
    pairs = all_pairs([document], np.random.default_rng(9))
    randoms = [pair for _, pair in pairs if pair.label == RANDOM_NEXT]
    assert abs(len(randoms) / len(pairs) - 0.5) < 0.1
    for pair in randoms:
        _, first_a, last_a = source(pair.tokens_a)
        _, first_b, last_b = source(pair.tokens_b)
        # B never overlaps A and starts FAR_SENTENCES sentences away, or more.
        assert last_b < first_a or first_b > last_a
        if first_b in starts:
            sentence_a = max(index for start, index in starts.items() if start <= first_a)
            assert abs(starts[first_b] - sentence_a) >= FAR_SENTENCES


def test_same_generator_state_gives_the_same_instances():
    documents = make_documents(np.random.default_rng(10), 50)
    first = all_pairs(documents, np.random.default_rng(11))
    second = all_pairs(documents, np.random.default_rng(11))
    assert first == second
    assert first != all_pairs(documents, np.random.default_rng(12))


def test_truncate_seq_pair_cuts_the_longer_side_from_both_ends():
    rng = np.random.default_rng(13)
    fronts = backs = 0
    for _ in range(200):
        a, b = truncate_seq_pair(list(range(100)), list(range(1000, 1030)), 60, rng)
        assert len(b) == 30 and len(a) == 30  # 70 removed, all from the longer A
        assert a == list(range(a[0], a[0] + 30))
        fronts += a[0] > 0
        backs += a[-1] < 99
    assert fronts > 150 and backs > 150
    a, b = truncate_seq_pair([1, 2, 3], [4, 5, 6], 4, rng)
    assert (len(a), len(b)) == (2, 2)
    assert truncate_seq_pair([1], [2], 10, rng) == ([1], [2])


def test_split_long_sentences_keeps_every_token():
    sentence = list(range(300))
    pieces = split_long_sentences([[7, 8], sentence], 125)
    assert [len(piece) for piece in pieces] == [2, 125, 125, 50]
    assert [token for piece in pieces[1:] for token in piece] == sentence


def test_packing_fills_sequences_and_separates_documents():
    rng = np.random.default_rng(14)
    documents = make_documents(rng, 60, sentences=(1, 10), length=(1, 30))
    separator = -1
    sequences = create_packed_instances(documents, max_num_tokens=126, separator_id=separator)
    assert max(len(sequence) for sequence in sequences) <= 126
    flat = [token for sequence in sequences for token in sequence]
    # Every token exactly once, in order, with one separator between consecutive documents
    # that share a sequence.
    assert [token for token in flat if token != separator] == [
        token for document in documents for sentence in document for token in sentence]
    for sequence in sequences:
        assert sequence[0] != separator and sequence[-1] != separator
        for left, right in zip(sequence, sequence[1:]):
            if right != separator and left != separator:
                assert left // STRIDE == right // STRIDE
    # Sequences are full: the next sentence would not have fitted.
    mean_fill = np.mean([len(sequence) for sequence in sequences[:-1]])
    assert mean_fill > 100


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_one_token_documents_make_no_broken_pairs(task):
    documents = [[[document * STRIDE]] for document in range(20)]
    for _, pair in all_pairs(documents, np.random.default_rng(15), task=task):
        assert pair.tokens_a and pair.tokens_b
        assert pair.label == (RANDOM_NEXT if task == "nsp" else IS_NEXT)
