"""`bertforge data prepare` end to end on the real corpora of ../shared/data.

All the English corpora (Gutenberg, WikiText-2 test, tiny-shakespeare: 8.45 MB) and 红楼梦 with
the Chinese vocab and jieba whole-word masking are prepared through the CLI. The manifest's
counts are checked against documents and sentences counted here by separate code (a character
scanner, not the library's regular expression), and against invalid UTF-8 counted by Python's
codec error handler. Then the loader reads the result (ranks, whole words), a run killed with
SIGKILL is resumed to the same bytes, and bad inputs give a one-line error and exit status 2.
"""

from __future__ import annotations

import codecs
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import require_file

ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "hon", "gen", "col", "capt", "lt", "sgt",
                 "messrs", "mme", "mlle", "vs", "etc", "cf", "viz", "vol", "fig", "ch", "pp", "jan", "feb", "apr",
                 "jun", "jul", "aug", "sept", "oct", "nov", "dec"}
DOTTED = {"e.g", "i.e", "a.m", "p.m"}
CLOSERS = "\"'”’)]»"
CHINESE_ENDS = "。！？；"
CHINESE_CLOSERS = "”’」』）》\"'"


def is_word_character(character: str) -> bool:
    return character.isalnum() or character == "_"


def is_exception(text: str, position: int) -> bool:
    """Whether the period-like mark at `position` follows an abbreviation or an initial."""
    start = position
    while start > 0 and is_word_character(text[start - 1]):
        start -= 1
    word = text[start:position]
    if word.lower() in ABBREVIATIONS or (len(word) == 1 and "A" <= word <= "Z"):
        return True
    dotted = text[max(0, position - 3):position]
    return (position >= 3 and dotted.lower() in DOTTED
            and (position == 3 or not is_word_character(text[position - 4])))


def count_sentences(paragraph: str) -> int:
    """Sentences by a character scan of the documented rules (independent of the library's regex)."""
    count, start, index = 0, 0, 0
    while index < len(paragraph):
        character = paragraph[index]
        end = None
        if character in CHINESE_ENDS:
            end = index
            while end < len(paragraph) and paragraph[end] in CHINESE_ENDS:
                end += 1
            while end < len(paragraph) and paragraph[end] in CHINESE_CLOSERS:
                end += 1
        elif character in ".!?" and not is_exception(paragraph, index):
            end = index
            while end < len(paragraph) and paragraph[end] in ".!?":
                end += 1
            while end < len(paragraph) and paragraph[end] in CLOSERS:
                end += 1
            if end >= len(paragraph) or not paragraph[end].isspace():
                end = None
        if end is None:
            index += 1
            continue
        count += bool(paragraph[start:end].strip())
        start = index = end
    return count + bool(paragraph[start:].strip())


def count_file(path: Path) -> dict[str, int]:
    """Documents, sentences, invalid UTF-8 sequences and title lines of one paragraph-layout file."""
    errors = []

    def handler(error: UnicodeDecodeError):
        errors.append(error.start)
        return "\ufffd", error.end

    name = f"bertforge-test-count-{id(errors)}"
    codecs.register_error(name, handler)
    text = path.read_bytes().decode("utf-8", name).lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    title = int(lines[0].startswith("[") and lines[0].rstrip().endswith("]") and lines[0].count("[") == 1)
    lines = lines[title:]
    documents = sentences = 0
    block: list[str] = []
    for line in lines + [""]:
        if line.strip():
            block.append(line.strip())
        elif block:
            documents += 1
            sentences += count_sentences(" ".join(block))
            block = []
    return {"documents": documents, "sentences": sentences, "replaced_characters": len(errors),
            "title_lines": title}


def bertforge(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertforge", *map(str, arguments)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def english_inputs(data_dir):
    corpora = data_dir / "corpora"
    files = sorted((corpora / "gutenberg").glob("*.txt"))
    files += [require_file(corpora / "wikitext-2-raw" / "wiki.test.raw"),
              require_file(corpora / "tinyshakespeare" / "input.txt")]
    assert len(files) == 15
    return files


@pytest.fixture(scope="module")
def english(english_inputs, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("english") / "data"
    vocab = require_file(data_dir / "vocab" / "bert-base-uncased-vocab.txt")
    # 2 MB chunks: every file is one piece, so no document is cut and the counts are exact.
    result = bertforge("data", "prepare", "--input", *english_inputs, "--vocab", vocab, "--out", out,
                       "--workers", "2", "--chunk-mb", "2", "--eval-fraction", "0.01")
    assert result.returncode == 0, result.stderr
    return out, result


def test_english_counts_match_the_text(english, english_inputs):
    out, result = english
    manifest = json.loads((out / "manifest.json").read_text())
    expected = {"documents": 0, "sentences": 0, "replaced_characters": 0, "title_lines": 0}
    for path in english_inputs:
        for key, value in count_file(path).items():
            expected[key] += value
    counts = manifest["counts"]
    assert {key: counts[key] for key in expected} == expected
    assert counts["title_lines"] == 13 and counts["replaced_characters"] > 0
    assert counts["files"] == 15
    assert counts["bytes"] == sum(path.stat().st_size for path in english_inputs)
    # Each file with replaced bytes is named in a warning, and in the manifest.
    for path, replaced in manifest["replaced_by_file"].items():
        assert f"warning: {path}: {replaced} invalid UTF-8" in result.stderr
    assert "shakespeare-caesar.txt" in " ".join(manifest["replaced_by_file"])
    assert "prepared 8.45 MB" in result.stderr
    train = manifest["splits"]["train"]
    assert abs(train["label_1"] / train["instances"] - 0.5) < 0.02
    assert counts["instances"]["eval"] > 0 and counts["instances"]["train"] > 30_000


def test_english_loader_ranks_and_lengths(english):
    from bertforge.data import PretrainingBatches, PretrainingDataset
    from bertforge.tokenizer import BertTokenizer

    out, _ = english
    dataset = PretrainingDataset(out)
    dataset.check_vocab(BertTokenizer(out / "vocab.txt"))
    assert int(dataset.lengths.max()) <= 128
    assert int(dataset.lengths.sum()) == dataset.num_tokens
    single = PretrainingBatches(dataset, batch_size=16, seed=5)
    ranks = [PretrainingBatches(dataset, batch_size=8, seed=5, rank=rank, world_size=2) for rank in range(2)]
    for step in (0, 1, len(single) - 1):
        whole = single.batch_at(3, step)
        parts = [batches.batch_at(3, step) for batches in ranks]
        assert sorted(whole.indices.tolist()) == sorted(parts[0].indices.tolist() + parts[1].indices.tolist())
        for part in parts:
            for row, index in enumerate(part.indices.tolist()):
                other = whole.indices.tolist().index(index)
                length = int(part["attention_mask"][row].sum())
                for key in ("input_ids", "labels", "token_type_ids"):
                    assert part[key][row, :length].tolist() == whole[key][other, :length].tolist()
        assert abs(whole.num_predictions / (whole.num_tokens - 3 * 16) - 0.15) < 0.05


def test_chinese_whole_word_masking(data_dir, tmp_path):
    pytest.importorskip("jieba")
    from bertforge.data import PretrainingBatches, PretrainingDataset

    text = require_file(data_dir / "corpora" / "zh" / "hongloumeng.txt")
    vocab = require_file(data_dir / "vocab" / "bert-base-chinese-vocab.txt")
    out = tmp_path / "zh"
    result = bertforge("data", "prepare", "--input", text, "--vocab", vocab, "--out", out, "--workers", "2",
                       "--whole-word-mask", "jieba", "--chunk-mb", "3")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    expected = count_file(text)
    assert {key: manifest["counts"][key] for key in expected} == expected
    assert manifest["counts"]["sentences"] > 30_000
    dataset = PretrainingDataset(out)
    instance = dataset[0]
    assert instance.word_starts is not None
    tokens = np.concatenate([dataset[index].input_ids for index in range(200)])
    starts = np.concatenate([dataset[index].word_starts for index in range(200)])
    # jieba joins many characters into words: a large share of tokens continue a word.
    assert 0.2 < 1 - starts[tokens > 103].mean() < 0.7
    batches = PretrainingBatches(dataset, batch_size=32, seed=0)
    assert batches.whole_word
    for step in range(5):
        batch = batches.batch_at(0, step)
        for row, index in enumerate(batch.indices.tolist()):
            item = dataset[index]
            predicted = batch["labels"][row, :len(item.input_ids)].numpy() != -100
            # A word is a stored word start and what continues it, up to a special token (a B
            # truncated from the front may begin inside a word, right after [SEP]).
            special = np.isin(item.input_ids, list(dataset.special_ids.values()))
            boundaries = np.flatnonzero(item.word_starts | special | np.concatenate([[True], special[:-1]]))
            for start, end in zip(boundaries, np.append(boundaries[1:], len(item.input_ids))):
                assert predicted[start:end].all() or not predicted[start:end].any()


def test_killed_run_resumes_to_the_same_bytes(data_dir, tmp_path):
    corpora = data_dir / "corpora"
    inputs = [require_file(corpora / "tinyshakespeare" / "input.txt"),
              require_file(corpora / "wikitext-2-raw" / "wiki.test.raw")]
    vocab = require_file(data_dir / "vocab" / "bert-base-uncased-vocab.txt")
    common = ["data", "prepare", "--input", *inputs, "--vocab", vocab, "--workers", "1", "--chunk-mb", "0.1",
              "--quiet"]
    reference = bertforge(*common, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "bertforge", *map(str, common), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out / "train").glob("shard-*.bin"))) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    killed = process.returncode == -signal.SIGKILL
    if killed:
        assert not (out / "manifest.json").exists()
    resumed = bertforge(*common[:-1], "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    if killed:
        assert "resumed:" in resumed.stderr
    files = {path.relative_to(out): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
    expected = {path.relative_to(tmp_path / "reference"): path.read_bytes()
                for path in sorted((tmp_path / "reference").rglob("*")) if path.is_file()}
    assert files == expected


def one_line_error(result: tuple[int, str], *fragments: str) -> None:
    status, stderr = result
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_inputs_through_the_cli(data_dir, tmp_path, capfd):
    from bertforge.cli.main import main

    vocab = require_file(data_dir / "vocab" / "bert-base-uncased-vocab.txt")

    def prepare(*inputs, extra=()):
        # The CLI's entry point in this process (a subprocess per case would spend most of its
        # time importing); status and stderr are what a shell would see.
        status = main(["data", "prepare", "--input", *map(str, inputs), "--vocab", str(vocab),
                       "--out", str(tmp_path / "out"), "--workers", "1", "--quiet", *extra])
        return status, capfd.readouterr().err

    binary = tmp_path / "picture.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    one_line_error(prepare(binary), str(binary), "binary file")

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line_error(prepare(empty), str(empty), "corpus is empty")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\t\n")
    one_line_error(prepare(blank), str(blank), "corpus is empty")

    missing = tmp_path / "missing.txt"
    one_line_error(prepare(missing), str(missing), "input not found")

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Il était une fois. Une histoire.\n\nUne autre très courte.\n".encode("latin-1"))
    one_line_error(prepare(latin1, extra=["--strict"]), f"{latin1}:1:", "invalid UTF-8")
    status, stderr = prepare(latin1)
    assert status == 0, stderr
    replaced = count_file(latin1)["replaced_characters"]
    assert replaced == 2
    assert stderr.strip() == (f"warning: {latin1}: {replaced} invalid UTF-8 sequence(s) replaced with U+FFFD "
                              "(--strict makes this an error)")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["replaced_characters"] == replaced
