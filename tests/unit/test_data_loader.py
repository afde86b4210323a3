"""PretrainingDataset and PretrainingBatches: batch layout, dynamic padding, ranks, exact resume,
per-epoch masks, static masks, vocab checks. Data: a tiny synthetic corpus and in-test vocab."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertforge.data import MaskingConfig, PrepareConfig, PretrainingBatches, PretrainingDataset, prepare_corpus
from bertforge.errors import BertforgeError
from bertforge.tokenizer import BertTokenizer

WORDS = ["the", "cat", "dog", "bird", "house", "tree", "river", "stone", "walk", "talk", "jump", "see",
         "red", "green", "small", "big", "old", "new", "and", "but", "with", "under", "over", "near"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + WORDS + ["##s", "##ing", "##ed"]


def write_corpus(directory, rng, documents=150):
    directory.mkdir(parents=True)
    blocks = []
    for _ in range(documents):
        sentences = []
        for _ in range(int(rng.integers(1, 10))):
            words = [WORDS[int(rng.integers(len(WORDS)))] + ("s" if rng.random() < 0.2 else "")
                     for _ in range(int(rng.integers(3, 20)))]
            sentences.append(" ".join(words) + ".")
        blocks.append(" ".join(sentences))
    (directory / "corpus.txt").write_text("\n\n".join(blocks) + "\n")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    vocab = root / "vocab.txt"
    vocab.write_text("".join(token + "\n" for token in VOCAB))
    write_corpus(root / "text", np.random.default_rng(0))
    directories = {}
    for name, settings in {"nsp": {}, "mlm": {"mode": "mlm"},
                           "static": {"static_masks": True, "dupe_factor": 1}}.items():
        out = root / name
        prepare_corpus(PrepareConfig(inputs=[str(root / "text")], vocab=str(vocab), out=str(out), workers=1,
                                     chunk_mb=0.005, eval_fraction=0.1, max_seq_length=64, **settings),
                       progress=False)
        directories[name] = out
    return directories, BertTokenizer(vocab)


def unpadded_rows(batch):
    """Per instance: (index, ids, types, labels, nsp) without padding, for comparing batches."""
    rows = {}
    for row, index in enumerate(batch.indices.tolist()):
        length = int(batch["attention_mask"][row].sum())
        rows[index] = (batch["input_ids"][row, :length].tolist(), batch["token_type_ids"][row, :length].tolist(),
                       batch["labels"][row, :length].tolist(),
                       int(batch["next_sentence_label"][row]) if "next_sentence_label" in batch else None)
    return rows


def test_batch_layout_and_dynamic_padding(prepared):
    directories, tokenizer = prepared
    dataset = PretrainingDataset(directories["nsp"])
    assert dataset.mode == "nsp" and len(dataset) == dataset.manifest["counts"]["instances"]["train"]
    batches = PretrainingBatches(dataset, batch_size=8, seed=0)
    assert len(batches) == len(dataset) // 8
    for batch in batches:
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
        for key in ("input_ids", "token_type_ids", "attention_mask", "labels"):
            assert batch[key].dtype == torch.long and batch[key].shape == batch["input_ids"].shape
        assert batch["next_sentence_label"].shape == (8,)
        lengths = batch["attention_mask"].sum(1)
        width = batch["input_ids"].shape[1]
        assert int(lengths.max()) == width  # padded to the longest of the batch
        assert batch.num_tokens == int(lengths.sum())
        assert batch.num_predictions == int((batch["labels"] != -100).sum())
        pad = batch["attention_mask"] == 0
        assert (batch["input_ids"][pad] == tokenizer.pad_token_id).all()
        assert (batch["labels"][pad] == -100).all() and (batch["token_type_ids"][pad] == 0).all()
        for row, index in enumerate(batch.indices.tolist()):
            instance = dataset[index]
            length = len(instance.input_ids)
            assert int(lengths[row]) == length
            types = batch["token_type_ids"][row, :length]
            assert types[:instance.segment_a_length].eq(0).all() and types[instance.segment_a_length:].eq(1).all()
            assert int(batch["next_sentence_label"][row]) == instance.label
            labels = batch["labels"][row, :length].numpy()
            predicted = labels != -100
            assert np.array_equal(labels[predicted], instance.input_ids[predicted])
            special = np.isin(instance.input_ids, tokenizer.all_special_ids)
            assert not predicted[special].any()
            unchanged = ~predicted
            assert np.array_equal(batch["input_ids"][row, :length].numpy()[unchanged], instance.input_ids[unchanged])
    singles = PretrainingBatches(dataset, batch_size=1)
    assert len({batch["input_ids"].shape[1] for batch in singles}) > 10  # short_seq_prob at work


def test_pad_to_max_length_and_multiple(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"])
    batch = next(iter(PretrainingBatches(dataset, batch_size=4, pad_to="max_length")))
    assert batch["input_ids"].shape == (4, 64)
    batch = next(iter(PretrainingBatches(dataset, batch_size=4, pad_to_multiple_of=8)))
    assert batch["input_ids"].shape[1] % 8 == 0


def test_two_ranks_see_the_single_process_batch_at_every_step(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"])
    single = PretrainingBatches(dataset, batch_size=8, seed=3)
    ranks = [PretrainingBatches(dataset, batch_size=4, seed=3, rank=rank, world_size=2) for rank in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for epoch in (0, 1):
        seen: set[int] = set()
        for step in range(len(single)):
            whole = single.batch_at(epoch, step)
            parts = [batches.batch_at(epoch, step) for batches in ranks]
            assert not set(parts[0].indices.tolist()) & set(parts[1].indices.tolist())
            assert unpadded_rows(whole) == {**unpadded_rows(parts[0]), **unpadded_rows(parts[1])}
            assert not seen & set(whole.indices.tolist())
            seen |= set(whole.indices.tolist())


def test_resume_mid_epoch_gives_the_same_batches(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"])
    reference = PretrainingBatches(dataset, batch_size=8, seed=1)
    expected = [unpadded_rows(batch) for _ in range(2) for batch in reference]  # two epochs
    interrupted = PretrainingBatches(dataset, batch_size=8, seed=1)
    taken = []
    for batch in interrupted:
        taken.append(unpadded_rows(batch))
        if len(taken) == 3:
            break
    state = interrupted.state_dict()
    assert state["epoch"] == 0 and state["position"] == 3
    resumed = PretrainingBatches(PretrainingDataset(directories["nsp"]), batch_size=8, seed=1)
    resumed.load_state_dict(state)
    taken += [unpadded_rows(batch) for batch in resumed]
    assert resumed.state_dict()["epoch"] == 1
    taken += [unpadded_rows(batch) for batch in resumed]
    assert taken == expected
    # Resuming with two ranks and the same global batch size continues the same stream.
    halves = [PretrainingBatches(dataset, batch_size=4, seed=1, rank=rank, world_size=2) for rank in range(2)]
    for half in halves:
        half.load_state_dict(state)
    merged = [{**unpadded_rows(a), **unpadded_rows(b)} for a, b in zip(*halves)]
    assert merged == expected[3:len(reference)]


def test_epochs_change_order_and_masks(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"])
    batches = PretrainingBatches(dataset, batch_size=8, seed=0)
    assert not np.array_equal(batches.order(0), batches.order(1))
    assert sorted(batches.order(1).tolist()) == list(range(len(dataset)))
    first = batches.collate(np.arange(8), epoch=0)
    second = batches.collate(np.arange(8), epoch=1)
    assert torch.equal(first["input_ids"].ne(-1), second["input_ids"].ne(-1))
    assert not torch.equal(first["labels"], second["labels"])
    assert torch.equal(first["labels"], batches.collate(np.arange(8), epoch=0)["labels"])
    in_order = PretrainingBatches(dataset, batch_size=8, shuffle=False)
    assert next(iter(in_order)).indices.tolist() == list(range(8))


def test_static_masks_do_not_change_between_epochs(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["static"])
    batches = PretrainingBatches(dataset, batch_size=8)
    first, second = batches.collate(np.arange(8), 0), batches.collate(np.arange(8), 5)
    assert torch.equal(first["labels"], second["labels"]) and torch.equal(first["input_ids"], second["input_ids"])
    assert first.num_predictions > 0


def test_mlm_mode_has_no_sentence_label(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["mlm"])
    batch = next(iter(PretrainingBatches(dataset, batch_size=4)))
    assert "next_sentence_label" not in batch
    assert (batch["token_type_ids"] == 0).all()


def test_drop_last_false_and_eval_split(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"], split="eval")
    assert len(dataset) > 0
    batch_size = 7
    single = PretrainingBatches(dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    sizes = [len(batch.indices) for batch in single]
    assert sum(sizes) == len(dataset) and len(sizes) == -(-len(dataset) // batch_size)
    ranks = [PretrainingBatches(dataset, batch_size=batch_size, shuffle=False, drop_last=False, rank=rank,
                                world_size=2) for rank in range(2)]
    assert {len(batch.indices) for batches in ranks for batch in batches} == {batch_size}
    covered = {index for batches in ranks for batch in batches for index in batch.indices.tolist()}
    assert covered == set(range(len(dataset)))
    with pytest.raises(BertforgeError, match="fewer than one global batch"):
        PretrainingBatches(dataset, batch_size=len(dataset) + 1)


def test_check_vocab_and_missing_directory(prepared, tmp_path):
    directories, tokenizer = prepared
    dataset = PretrainingDataset(directories["nsp"])
    dataset.check_vocab(tokenizer)
    other = tmp_path / "vocab.txt"
    other.write_text("".join(token + "\n" for token in reversed(VOCAB)))
    with pytest.raises(BertforgeError, match="not the one the data was prepared with"):
        dataset.check_vocab(BertTokenizer(other))
    with pytest.raises(BertforgeError, match="no manifest.json"):
        PretrainingDataset(tmp_path)
    with pytest.raises(BertforgeError, match="not found"):
        PretrainingDataset(tmp_path / "nowhere")


def test_whole_word_default_comes_from_the_manifest(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"])
    assert PretrainingBatches(dataset, batch_size=4).whole_word is False
    assert PretrainingBatches(dataset, batch_size=4, masking=MaskingConfig(whole_word_mask=True)).whole_word


def test_worker_processes_build_the_same_batches(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"])
    here = PretrainingBatches(dataset, batch_size=8, seed=2)
    here.load_state_dict({"epoch": 1, "position": 2})
    ahead = PretrainingBatches(dataset, batch_size=8, seed=2, num_workers=2, prefetch_factor=2)
    ahead.load_state_dict({"epoch": 1, "position": 2})
    expected = [(batch.indices.tolist(), batch.num_tokens, unpadded_rows(batch)) for batch in here]
    found = []
    for batch in ahead:
        found.append((batch.indices.tolist(), batch.num_tokens, unpadded_rows(batch)))
        assert ahead.state_dict()["position"] == len(found) + 2
    assert found == expected
    assert ahead.state_dict() == here.state_dict() == {"epoch": 2, "position": 0, "samples": 0, "seed": 2}


def test_token_counts_add_up_to_the_split(prepared):
    directories, _ = prepared
    dataset = PretrainingDataset(directories["nsp"], "train")
    counts = dataset.token_counts()
    assert counts.shape == (dataset.vocab_size,) and int(counts.sum()) == dataset.num_tokens
    assert counts[dataset.special_ids["cls"]] == len(dataset)
