"""`bertforge tokenizer train` end to end on real books, and the vocab it writes in transformers.

The CLI runs as a subprocess (`python -m bertforge`) so exit codes and stderr are the real ones.
A vocab trained on two Gutenberg books must load in transformers' BertTokenizer (and
AutoTokenizer, and the pure-Python legacy class when present) and give the same ids as
bertforge on text it was not trained on.
"""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from conftest import require_file

from bertforge.tokenizer import SPECIAL_TOKENS, BertTokenizer, read_vocab

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

HELD_OUT_EXTRAS = [
    "", "   ", "Café naïve Ångström résumé", "ÉCOLE ÉLÉMENTAIRE", "北京欢迎你 and 日本語", "emoji 😀 👍🏽",
    "\x00control\ufffd\u200bchars\ttab\r\n", "x" * 150, "Mr. Darcy's well-known, \"proud\" air!",
    "[MASK] [CLS] [sep]",
]


def bertforge(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertforge", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def held_out_lines(data_dir: Path) -> list[str]:
    # Moby Dick has CRLF line endings; neither book was in the training corpus.
    moby = require_file(data_dir / "corpora/gutenberg/melville-moby_dick.txt")
    lines = moby.read_text(encoding="utf-8").splitlines()[:3000]
    blake = require_file(data_dir / "corpora/gutenberg/blake-poems.txt").read_text(encoding="utf-8").splitlines()
    return lines + blake + HELD_OUT_EXTRAS


@pytest.mark.parametrize("casing", ["--lowercase", "--no-lowercase"])
def test_train_cli_and_transformers_parity(data_dir, tmp_path, casing):
    books = [require_file(data_dir / "corpora/gutenberg" / name)
             for name in ("austen-persuasion.txt", "chesterton-thursday.txt")]
    out = tmp_path / "vocab"
    result = bertforge("tokenizer", "train", "--files", *map(str, books), "--vocab-size", "4000", casing,
                       "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("trained 4000 tokens")
    lowercase = casing == "--lowercase"
    assert ("(uncased)" if lowercase else "(cased)") in summary[0]
    tokens = read_vocab(out / "vocab.txt")
    assert tokens[:5] == list(SPECIAL_TOKENS) and len(tokens) == 4000

    ours = BertTokenizer.from_pretrained(out)
    assert ours.lowercase is lowercase
    references = {
        "BertTokenizer": transformers.BertTokenizer.from_pretrained(out),
        "AutoTokenizer": transformers.AutoTokenizer.from_pretrained(out),
    }
    legacy = getattr(transformers, "BertTokenizerLegacy", None)
    if legacy is not None:
        references["BertTokenizerLegacy"] = legacy.from_pretrained(out)
    texts = held_out_lines(data_dir)
    mine = ours(texts)["input_ids"]
    assert sum(len(row) for row in mine) > 30000
    for name, reference in references.items():
        theirs = reference(texts)["input_ids"]
        if not reference.is_fast and not lowercase:
            # The pure-Python class NFC-normalizes cased text (see test_tokenizer_parity.py).
            mine_compared = ours([unicodedata.normalize("NFC", text) for text in texts])["input_ids"]
        else:
            mine_compared = mine
        differing = [index for index, (a, b) in enumerate(zip(mine_compared, theirs)) if a != b]
        assert not differing, f"{name}: {len(differing)} lines differ, first {texts[differing[0]]!r}"


def test_train_cli_help_has_examples(tmp_path):
    result = bertforge("tokenizer", "train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "bertforge tokenizer train --files" in result.stdout
    assert "--vocab-size" in result.stdout and "--no-lowercase" in result.stdout


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_empty_corpus_is_a_one_line_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    line = one_line_error(bertforge("tokenizer", "train", "--files", str(empty), "--out", str(tmp_path / "v"),
                                    cwd=tmp_path))
    assert str(empty) in line and "empty" in line
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n\r\n")
    line = one_line_error(bertforge("tokenizer", "train", "--files", str(blank), "--out", str(tmp_path / "v"),
                                    cwd=tmp_path))
    assert str(blank) in line
    assert not (tmp_path / "v").exists()


def test_missing_and_non_utf8_files_are_one_line_errors(data_dir, tmp_path):
    line = one_line_error(bertforge("tokenizer", "train", "--files", str(tmp_path / "nope.txt"), "--out",
                                    str(tmp_path / "v"), cwd=tmp_path))
    assert "nope.txt: training file not found" in line
    latin1 = require_file(data_dir / "corpora/gutenberg/shakespeare-caesar.txt")  # ISO-8859-1
    line = one_line_error(bertforge("tokenizer", "train", "--files", str(latin1), "--out", str(tmp_path / "v"),
                                    cwd=tmp_path))
    assert f"{latin1}:119: not UTF-8" in line
    line = one_line_error(bertforge("tokenizer", "train", "--vocab-size", "100", cwd=tmp_path))
    assert "--files" in line
