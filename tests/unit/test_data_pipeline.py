"""prepare_corpus on a small synthetic corpus with a tiny in-test vocab: counts, determinism
(seed, worker count), resuming, static masks, the output directory rules, bad inputs."""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import pytest

from bertforge.data.prepare import PrepareConfig, prepare_corpus
from bertforge.data.shards import Shard
from bertforge.errors import BertforgeError
from bertforge.tokenizer import BertTokenizer

WORDS = ["the", "cat", "dog", "bird", "house", "tree", "river", "stone", "walk", "talk", "jump", "see",
         "red", "green", "small", "big", "old", "new", "and", "but", "with", "under", "over", "near"]
SUFFIXES = ["s", "ing", "ed"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "?"] + WORDS + [f"##{s}" for s in SUFFIXES]


def write_vocab(directory):
    path = directory / "vocab.txt"
    path.write_text("".join(token + "\n" for token in VOCAB))
    return path


def make_corpus(rng, documents=120):
    """Documents of 1-12 sentences; words sometimes carry a suffix (a ## piece)."""
    result = []
    for _ in range(documents):
        sentences = []
        for _ in range(int(rng.integers(1, 13))):
            words = []
            for _ in range(int(rng.integers(3, 16))):
                word = WORDS[int(rng.integers(len(WORDS)))]
                if rng.random() < 0.2:
                    word += SUFFIXES[int(rng.integers(len(SUFFIXES)))]
                words.append(word)
            sentences.append(" ".join(words).capitalize() + ".")
        result.append(sentences)
    return result


def write_corpus(directory, documents, files=3):
    """Documents spread over `files` paragraph-layout files, sentences hard-wrapped in pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(documents) // files)
    paths = []
    for number in range(files):
        part = documents[number * per_file:(number + 1) * per_file]
        blocks = []
        for sentences in part:
            lines = [" ".join(sentences[index:index + 2]) for index in range(0, len(sentences), 2)]
            blocks.append("\n".join(lines))
        path = directory / f"part{number}.txt"
        path.write_text("\n\n".join(blocks) + "\n")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    documents = make_corpus(np.random.default_rng(0))
    write_corpus(root / "text", documents)
    return root, documents, write_vocab(root)


def prepare(corpus_root, vocab, out, **settings):
    settings.setdefault("workers", 1)
    settings.setdefault("chunk_mb", 0.004)  # ~4 kB chunks: many shards from a small corpus
    config = PrepareConfig(inputs=[str(corpus_root / "text")], vocab=str(vocab), out=str(out), **settings)
    return prepare_corpus(config, progress=False)


def shard_bytes(directory):
    return {path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*.bin"))}


def test_manifest_counts_match_the_corpus(corpus, tmp_path):
    root, documents, vocab = corpus
    manifest = prepare(root, vocab, tmp_path / "out")
    counts = manifest["counts"]
    assert counts["files"] == 3
    assert counts["documents"] == len(documents)
    assert counts["sentences"] == sum(len(document) for document in documents)
    assert counts["bytes"] == sum(path.stat().st_size for path in (root / "text").iterdir())
    assert counts["replaced_characters"] == 0
    assert len(manifest["splits"]["train"]["shards"]) > 3
    total = 0
    for split in ("train", "eval"):
        instances = tokens = 0
        for entry in manifest["splits"][split]["shards"]:
            shard = Shard(tmp_path / "out" / entry["file"])
            assert len(shard["offsets"]) == entry["instances"] + 1
            lengths = np.diff(shard["offsets"])
            assert lengths.max(initial=0) <= 128
            instances += entry["instances"]
            tokens += int(lengths.sum())
        assert counts["instances"][split] == instances and counts["tokens"][split] == tokens
        total += instances
    assert total > 100
    assert manifest["vocab"]["hash"] == BertTokenizer(vocab).vocab_hash
    assert (tmp_path / "out" / "vocab.txt").read_text() == vocab.read_text()


def test_mlm_mode_keeps_every_token(corpus, tmp_path):
    root, documents, vocab = corpus
    manifest = prepare(root, vocab, tmp_path / "out", mode="mlm", eval_fraction=0.0, max_seq_length=64)
    tokenizer = BertTokenizer(vocab)
    expected = collections.Counter(token for document in documents
                                   for ids in tokenizer.encode_batch_ids(document) for token in ids)
    found = collections.Counter()
    separators = 0
    for entry in manifest["splits"]["train"]["shards"]:
        shard = Shard(tmp_path / "out" / entry["file"])
        assert "labels" not in shard
        offsets, tokens = shard["offsets"], shard["tokens"]
        for start, end in zip(offsets[:-1], offsets[1:]):
            sequence = tokens[start:end].tolist()
            assert sequence[0] == tokenizer.cls_token_id and sequence[-1] == tokenizer.sep_token_id
            assert len(sequence) <= 64
            body = sequence[1:-1]
            separators += body.count(tokenizer.sep_token_id)
            found.update(token for token in body if token != tokenizer.sep_token_id)
    assert found == expected
    # Documents are separated inside sequences, so there are fewer separators than boundaries.
    assert 0 < separators < len(documents)
    assert manifest["counts"]["instances"]["eval"] == 0


def test_same_seed_same_bytes_and_worker_count_does_not_matter(corpus, tmp_path):
    root, _, vocab = corpus
    prepare(root, vocab, tmp_path / "one", workers=1)
    prepare(root, vocab, tmp_path / "two", workers=2)
    prepare(root, vocab, tmp_path / "again", workers=1)
    prepare(root, vocab, tmp_path / "other", workers=1, seed=1)
    one = shard_bytes(tmp_path / "one")
    assert one == shard_bytes(tmp_path / "two") == shard_bytes(tmp_path / "again")
    assert one.keys() == shard_bytes(tmp_path / "other").keys()
    assert one != shard_bytes(tmp_path / "other")
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest == json.loads((tmp_path / "two" / "manifest.json").read_text())


def test_resume_after_a_crash_gives_the_same_result(corpus, tmp_path):
    root, _, vocab = corpus
    reference = prepare(root, vocab, tmp_path / "reference")
    out = tmp_path / "crashed"
    prepare(root, vocab, out)
    # What a SIGKILL part way leaves: no manifest, some shards missing, a half-written temporary.
    (out / "manifest.json").unlink()
    shards = sorted((out / "train").glob("*.bin"))
    for path in shards[len(shards) // 2:]:
        path.unlink()
    (out / "train" / ".shard-000003.bin.abc123.tmp").write_bytes(b"partial")
    kept = {path: path.stat().st_mtime_ns for path in shards[:len(shards) // 2]}
    logged = []
    resumed = prepare_corpus(PrepareConfig(inputs=[str(root / "text")], vocab=str(vocab), out=str(out),
                                           workers=1, chunk_mb=0.004), progress=True, bar=False,
                             log=logged.append)
    assert resumed == reference
    assert shard_bytes(out) == shard_bytes(tmp_path / "reference")
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items()), "finished shards are kept"
    assert not list(out.rglob("*.tmp"))
    assert any("resumed" in line for line in logged)


def test_static_masking_stores_fixed_masks(corpus, tmp_path):
    root, _, vocab = corpus
    manifest = prepare(root, vocab, tmp_path / "out", static_masks=True, dupe_factor=2,
                       whole_word_mask="wordpiece")
    tokenizer = BertTokenizer(vocab)
    dynamic = prepare(root, vocab, tmp_path / "dynamic")
    # Two copies, each with its own pairs.
    assert manifest["counts"]["instances"]["train"] > 1.6 * dynamic["counts"]["instances"]["train"]
    predicted = maskable = masked = 0
    for entry in manifest["splits"]["train"]["shards"]:
        shard = Shard(tmp_path / "out" / entry["file"])
        tokens, offsets = shard["tokens"], shard["offsets"]
        positions, mask_offsets, labels = shard["mask_positions"], shard["mask_offsets"], shard["mask_labels"]
        for index in range(len(offsets) - 1):
            sequence = tokens[offsets[index]:offsets[index + 1]]
            chosen = positions[mask_offsets[index]:mask_offsets[index + 1]].astype(np.int64)
            originals = labels[mask_offsets[index]:mask_offsets[index + 1]]
            assert not np.isin(originals, tokenizer.all_special_ids).any()
            original = sequence.copy()
            original[chosen] = originals
            predicted += len(chosen)
            masked += int((sequence[chosen] == tokenizer.mask_token_id).sum())
            maskable += int((~np.isin(original, tokenizer.all_special_ids)).sum())
    assert abs(predicted / maskable - 0.15) < 0.01
    assert abs(masked / predicted - 0.8) < 0.03


def test_output_directory_rules(corpus, tmp_path):
    root, _, vocab = corpus
    out = tmp_path / "out"
    first = prepare(root, vocab, out)
    logged = []
    again = prepare_corpus(PrepareConfig(inputs=[str(root / "text")], vocab=str(vocab), out=str(out), workers=1,
                                         chunk_mb=0.004), progress=True, bar=False, log=logged.append)
    assert again == first and "already prepared" in logged[0]
    with pytest.raises(BertforgeError, match="other settings"):
        prepare(root, vocab, out, max_seq_length=64)
    replaced = prepare(root, vocab, out, max_seq_length=64, overwrite=True)
    assert replaced["max_seq_length"] == 64
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(BertforgeError, match="not prepared data"):
        prepare(root, vocab, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_bad_inputs(tmp_path):
    vocab = write_vocab(tmp_path)
    (tmp_path / "text").mkdir()
    empty = tmp_path / "text" / "empty.txt"
    empty.write_text("")
    with pytest.raises(BertforgeError, match="corpus is empty") as error:
        prepare(tmp_path, vocab, tmp_path / "out")
    assert "empty.txt" in str(error.value)
    empty.write_text("\n\n   \n\n")
    with pytest.raises(BertforgeError, match="corpus is empty"):
        prepare(tmp_path, vocab, tmp_path / "out")
    empty.write_bytes(b"the cat\x00\x01\x02")
    with pytest.raises(BertforgeError, match="binary file") as error:
        prepare(tmp_path, vocab, tmp_path / "out")
    assert "empty.txt" in str(error.value)
    with pytest.raises(BertforgeError, match="vocab file not found"):
        prepare(tmp_path, tmp_path / "missing-vocab.txt", tmp_path / "out")
    with pytest.raises(BertforgeError, match="max_seq_length"):
        PrepareConfig(inputs=["x"], vocab="v", out="o", max_seq_length=2)


def test_errors_raised_in_worker_processes_name_file_and_line(corpus, tmp_path):
    root, _, vocab = corpus
    text = tmp_path / "text"
    shutil.copytree(root / "text", text)
    bad = text / "part1.txt"
    lines = bad.read_bytes().split(b"\n")
    lines[40] = lines[40] + b" caf\xe9"
    bad.write_bytes(b"\n".join(lines))
    with pytest.raises(BertforgeError, match="invalid UTF-8") as error:
        prepare(tmp_path, vocab, tmp_path / "out", workers=2, strict=True)
    assert f"{bad}:41:" in str(error.value)
    manifest = prepare(tmp_path, vocab, tmp_path / "out", workers=2)
    assert manifest["counts"]["replaced_characters"] == 1
    assert manifest["replaced_by_file"] == {str(bad): 1}


def test_config_rejects_pointless_duplicates():
    with pytest.raises(BertforgeError, match="only repeat identical"):
        PrepareConfig(inputs=["x"], vocab="v", out="o", mode="mlm", dupe_factor=2)
    PrepareConfig(inputs=["x"], vocab="v", out="o", mode="mlm", dupe_factor=2, static_masks=True)


def test_tiny_corpus_still_gets_an_eval_split(tmp_path):
    vocab = write_vocab(tmp_path)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "small.txt").write_text(
        "The cat walks. The dog talks.\n\nThe bird jumps. The tree sees.\n\nA river and a stone.\n")
    manifest = prepare(tmp_path, vocab, tmp_path / "out", eval_fraction=0.01)
    assert manifest["splits"]["eval"]["documents"] == 1 and manifest["splits"]["train"]["documents"] == 2
    assert manifest["counts"]["instances"]["eval"] > 0
