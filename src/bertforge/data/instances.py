"""Training instances from tokenized documents: NSP pairs (BERT), SOP pairs (ALBERT) and
full-sentence packing (RoBERTa).

A document is a list of sentences, a sentence a list of token ids (no special tokens). The pair
modes follow google-research/bert `create_instances_from_document` (eedf571) line by line; the
comments marked WHY carry its reasoning. All randomness comes from the `numpy.random.Generator`
passed in.

Departures from google-research/bert, each for a stated reason:

- The random-next document is drawn from `documents` as given, which in bertforge is the
  documents of one chunk of the corpus (about a megabyte of text), not the whole corpus held in
  memory: that is what keeps memory flat (google-research/bert #117, #89). It is drawn uniformly
  among the *other* documents (google retries 10 times and may end up with the same one).
- A chunk that holds a single segment (a sentence longer than the target, or the last sentence
  of a document) is split at a random token into A and B. google forces a random B there,
  which skews the labels towards "random" on corpora of short documents (measured on the
  Gutenberg files, whose documents are paragraphs: 71.9% random with google's rule, 49.8% with
  the split); the split keeps them at 50/50.
- `truncate_seq_pair` draws the number of tokens cut from the front as a binomial, in one call,
  instead of one coin per removed token: the same distribution, without a Python loop per token.
- When there is no other document to draw from (a chunk holding one long document, such as a
  file without blank lines), the random B starts at a sentence at least `FAR_SENTENCES` away
  from A in the same document, which is as unrelated as another document in practice; only a
  document too short for that gets the actual next segment. (Otherwise every pair of such a
  chunk would be labelled "next".)

Labels follow transformers: NSP 0 = B follows A, 1 = B is random; SOP 0 = in order, 1 = swapped.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

IS_NEXT = 0
RANDOM_NEXT = 1
IN_ORDER = 0
SWAPPED = 1

FAR_SENTENCES = 64
"""How far from A (in sentences) a random B is drawn when it must come from the same document."""

Document = Sequence[Sequence[int]]


class PairInstance(NamedTuple):
    tokens_a: list[int]
    tokens_b: list[int]
    label: int


def split_long_sentences(document: Sequence[list[int]], max_tokens: int) -> list[list[int]]:
    """Sentences longer than `max_tokens` cut into consecutive pieces (an over-long line is split,
    not dropped or truncated away)."""
    result: list[list[int]] = []
    for sentence in document:
        if len(sentence) <= max_tokens:
            result.append(sentence)
        else:
            result.extend(sentence[start:start + max_tokens] for start in range(0, len(sentence), max_tokens))
    return result


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Cut a pair to `max_num_tokens`, one token at a time from the longer side (B on ties).

    WHY (google): "We want to sometimes truncate from the front and sometimes from the back to
    add more randomness and avoid biases."
    """
    length_a, length_b = len(tokens_a), len(tokens_b)
    excess = length_a + length_b - max_num_tokens
    if excess <= 0:
        return tokens_a, tokens_b
    remove_a = remove_b = 0
    for _ in range(excess):
        if length_a - remove_a > length_b - remove_b:
            remove_a += 1
        else:
            remove_b += 1
    return _cut(tokens_a, remove_a, rng), _cut(tokens_b, remove_b, rng)


def _cut(tokens: list[int], count: int, rng: np.random.Generator) -> list[int]:
    if count == 0:
        return tokens
    front = int(rng.binomial(count, 0.5))
    return tokens[front:len(tokens) - (count - front)]


def _random_source(rng: np.random.Generator, documents: Sequence[Document], document_index: int,
                   first: int, last: int) -> tuple[int, int] | None:
    """(document, first sentence) where a random B starts: another document when there is one,
    else the same document at least FAR_SENTENCES from the chunk [first, last]; None if neither."""
    if len(documents) >= 2:
        other = int(rng.integers(len(documents) - 1))
        other += other >= document_index
        return other, int(rng.integers(len(documents[other])))
    size = len(documents[document_index])
    before = max(0, first - FAR_SENTENCES)
    after = max(0, size - (last + FAR_SENTENCES + 1))
    if before + after == 0:
        return None
    pick = int(rng.integers(before + after))
    return document_index, pick if pick < before else last + FAR_SENTENCES + 1 + (pick - before)


def create_pair_instances(documents: Sequence[Document], document_index: int, *, max_num_tokens: int,
                          short_seq_prob: float, rng: np.random.Generator,
                          task: str = "nsp") -> list[PairInstance]:
    """NSP (`task="nsp"`) or SOP (`task="sop"`) pairs from `documents[document_index]`.

    `max_num_tokens` is max_seq_length - 3 ([CLS], [SEP], [SEP]). Every sentence must be
    non-empty and at most `max_num_tokens` long (see `split_long_sentences`).
    """
    if task not in ("nsp", "sop"):
        raise ValueError(f"task must be 'nsp' or 'sop', got {task!r}")
    document = documents[document_index]

    # WHY (google): "We *usually* want to fill up the entire sequence since we are padding to
    # `max_seq_length` anyways, so short sequences are generally wasted computation. However, we
    # *sometimes* (i.e., short_seq_prob == 0.1 == 10% of the time) want to use shorter sequences
    # to minimize the mismatch between pre-training and fine-tuning. The `target_seq_length` is
    # just a rough target however, whereas `max_seq_length` is a hard limit."
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = int(rng.integers(2, max_num_tokens + 1))

    # WHY (google): "We DON'T just concatenate all of the tokens from a document into a long
    # sequence and choose an arbitrary split point because this would make the next sentence
    # prediction task too easy. Instead, we split the input into segments "A" and "B" based on
    # the actual "sentences" provided by the user input."
    instances: list[PairInstance] = []
    current_chunk: list[Sequence[int]] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            instance, put_back = _pair_from_chunk(current_chunk, documents, document_index, i,
                                                  target_seq_length, max_num_tokens, rng, task)
            if instance is not None:
                instances.append(instance)
            i -= put_back
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def _pair_from_chunk(current_chunk: list[Sequence[int]], documents: Sequence[Document], document_index: int,
                     last: int, target_seq_length: int, max_num_tokens: int, rng: np.random.Generator,
                     task: str) -> tuple[PairInstance | None, int]:
    """One pair from the chunk of sentences that ends at sentence `last` of the document, and how
    many of those sentences go back to be used again (those a random B left unused)."""
    chunk_first = last + 1 - len(current_chunk)  # the chunk is sentences chunk_first..last
    split_single = False
    if len(current_chunk) == 1 and len(current_chunk[0]) >= 2:
        only = current_chunk[0]
        cut = int(rng.integers(1, len(only)))
        current_chunk = [only[:cut], only[cut:]]
        split_single = True
    # WHY (google): "`a_end` is how many segments from `current_chunk` go into the `A`
    # (first) sentence."
    a_end = 1
    if len(current_chunk) >= 2:
        a_end = int(rng.integers(1, len(current_chunk)))
    tokens_a = [token for part in current_chunk[:a_end] for token in part]

    tokens_b: list[int] = []
    label = IS_NEXT
    source = None
    put_back = 0
    if task == "nsp" and (len(current_chunk) == 1 or rng.random() < 0.5):
        # WHY (google): "we try to make sure that the random document is not the same as
        # the document we're processing."
        source = _random_source(rng, documents, document_index, chunk_first, last)
    if source is not None:
        label = RANDOM_NEXT
        target_b_length = target_seq_length - len(tokens_a)
        random_document, random_start = documents[source[0]], source[1]
        for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
                break
        # WHY (google): "We didn't actually use these segments so we 'put them back' so
        # they don't go to waste." (A split single segment has nothing to put back: its
        # second half is not a sentence of the document.)
        if not split_single:
            put_back = len(current_chunk) - a_end
    elif len(current_chunk) >= 2:
        tokens_b = [token for part in current_chunk[a_end:] for token in part]
        if task == "sop" and rng.random() < 0.5:
            # ALBERT: the two consecutive segments in swapped order are the negatives.
            tokens_a, tokens_b = tokens_b, tokens_a
            label = SWAPPED
    if not (tokens_a and tokens_b):
        return None, put_back
    tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
    return PairInstance(tokens_a, tokens_b, label), put_back


def create_packed_instances(documents: Sequence[Document], *, max_num_tokens: int,
                            separator_id: int) -> list[list[int]]:
    """RoBERTa's FULL-SENTENCES packing: whole sentences, filling each sequence up to
    `max_num_tokens` (max_seq_length - 2), crossing document boundaries with an extra
    separator between documents. No second segment and no sentence-level task.

    WHY (RoBERTa, section 4.2): removing NSP and packing full sentences "matches or slightly
    improves downstream task performance", and filled sequences waste no compute on padding.
    """
    instances: list[list[int]] = []
    current: list[int] = []
    for document in documents:
        separate = bool(current)
        for sentence in document:
            needed = len(sentence) + int(separate)
            if current and len(current) + needed > max_num_tokens:
                instances.append(current)
                current = []
                separate = False
            if separate:
                current.append(separator_id)
                separate = False
            current.extend(sentence)
    if current:
        instances.append(current)
    return instances
