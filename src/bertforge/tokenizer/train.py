"""Training a new WordPiece vocab from plain text files.

The text goes through the same normalizer and pre-tokenizer as `BertTokenizer` (clean text,
CJK splitting, lower-casing and accent stripping for uncased vocabs, punctuation splitting),
then the `tokenizers` WordPiece trainer builds the vocab: BERT's special tokens first ([PAD]=0,
[UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4), then the alphabet (at most `limit_alphabet` characters,
each alone and as a `##` continuation), then merged pieces until `vocab_size`.

Departure from google-research/bert: Google's own vocabs came from an unreleased WordPiece
implementation (likelihood-based merges) and put [unused*] slots first; the `tokenizers`
trainer picks merges by the BPE-style pair score and adds no unused slots. The tokenizer that
reads the vocab is the same either way (greedy longest-match), so transformers loads and
applies a trained vocab exactly as bertforge does.

Files are read as UTF-8, one line at a time (a byte-order mark at the start is dropped); a
missing file, a directory, bytes that are not UTF-8 (reported with their line), or a file with
no text at all (empty or only whitespace) is a `BertforgeError` naming the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from bertforge.errors import BertforgeError
from bertforge.fileio import MODEL_FILES, prepare_output
from bertforge.tokenizer.bert import (CONFIG_FILE, DEFAULT_MODEL_MAX_LENGTH, MAX_INPUT_CHARS_PER_WORD, VOCAB_FILE,
                                     BertTokenizer)
from bertforge.tokenizer.vocab import SPECIAL_TOKENS, UNK_TOKEN, write_vocab

_CHUNK = 1 << 20


@dataclass
class CorpusFile:
    path: Path
    lines: int
    size: int


def scan_files(files: Sequence[str | Path]) -> list[CorpusFile]:
    """Check every training file exists and holds some text; count its lines (for progress)."""
    if not files:
        raise BertforgeError("no training files given")
    scanned: list[CorpusFile] = []
    empty: list[Path] = []
    for name in files:
        path = Path(name)
        if path.is_dir():
            raise BertforgeError("is a directory, expected a text file", path=path)
        lines = 0
        has_text = False
        last = b""
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    lines += chunk.count(b"\n")
                    # Only ASCII whitespace is stripped here: a file of, say, ideographic spaces
                    # passes this check and is caught while it is read (see _read_lines).
                    has_text = has_text or bool(chunk.strip().lstrip(b"\xef\xbb\xbf").strip())
                    last = chunk[-1:]
            size = path.stat().st_size
        except FileNotFoundError:
            raise BertforgeError("training file not found", path=path) from None
        except OSError as error:
            raise BertforgeError(f"cannot read training file: {error.strerror}", path=path) from None
        if last and last != b"\n":
            lines += 1
        if not has_text:
            empty.append(path)
        scanned.append(CorpusFile(path, lines, size))
    if empty:
        names = ", ".join(str(path) for path in empty)
        what = "is empty or only whitespace" if len(empty) == 1 else "are empty or only whitespace"
        raise BertforgeError(f"training file{'s' if len(empty) > 1 else ''} {what}: no text to learn a vocab from",
                             path=names)
    return scanned


def _read_lines(corpus: list[CorpusFile]) -> Iterator[str]:
    for entry in corpus:
        saw_text = False
        with open(entry.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise BertforgeError(f"not UTF-8 (bytes 0x{raw[error.start:error.end].hex()} at column "
                                         f"{error.start + 1}); convert the file to UTF-8",
                                         path=entry.path, line=number) from None
                if number == 1:
                    line = line.lstrip("\ufeff")
                if not saw_text and line.strip():
                    saw_text = True
                yield line
        if not saw_text:
            raise BertforgeError("training file is only whitespace: no text to learn a vocab from", path=entry.path)


@dataclass
class VocabConfig:
    """How `train_vocab` learns a vocab; also the options of `bertforge tokenizer train`."""

    vocab_size: int = 30522
    """Largest vocab size, special tokens and alphabet included (a small corpus can give fewer)."""
    lowercase: bool = True
    """Uncased vocab: lower-case the text and strip accents (--no-lowercase: cased)."""
    min_frequency: int = 2
    """Merge only pairs seen at least this often."""
    limit_alphabet: int = 1000
    """Keep at most this many distinct characters (the rarest become [UNK])."""
    strip_accents: bool | None = None
    """Strip accents; None: follow lowercase."""
    tokenize_chinese_chars: bool = True
    """Split CJK ideographs into single characters."""
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
    """model_max_length written to tokenizer_config.json."""

    def __post_init__(self) -> None:
        if self.vocab_size < len(SPECIAL_TOKENS) + 1:
            raise BertforgeError(f"vocab_size must be more than {len(SPECIAL_TOKENS)}, got {self.vocab_size}")
        if self.min_frequency < 0 or self.limit_alphabet < 1:
            raise BertforgeError("min_frequency must be >= 0 and limit_alphabet >= 1")


def train_vocab(files: Sequence[str | Path], out_dir: str | Path, config: VocabConfig | None = None, *,
                show_progress: bool = False, overwrite: bool = False, **changes: Any) -> BertTokenizer:
    """Learn a WordPiece vocab from `files`; write `out_dir/vocab.txt` and
    `out_dir/tokenizer_config.json` (atomically) and return the tokenizer that reads them.

    `changes` are `VocabConfig` fields set on `config` (or on the defaults):
    `train_vocab(files, out, vocab_size=8000, lowercase=False)`. `show_progress` draws the
    `tokenizers` trainer's progress bars on stderr. An existing vocab in `out_dir` is replaced
    only with `overwrite`, and never in a model directory (its weights fit the old vocab).
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    config = dataclasses.replace(config or VocabConfig(), **changes)
    prepare_output(out_dir, kind="directory", finished=(VOCAB_FILE, CONFIG_FILE), what="vocab",
                   overwrite=overwrite, never={name: "a model, whose weights a new vocab would not match"
                                               for name in MODEL_FILES})
    vocab_size, lowercase, strip_accents = config.vocab_size, config.lowercase, config.strip_accents
    tokenize_chinese_chars = config.tokenize_chinese_chars
    corpus = scan_files(files)

    backend = Tokenizer(WordPiece(unk_token=UNK_TOKEN, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                    strip_accents=strip_accents, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=config.min_frequency,
                               limit_alphabet=config.limit_alphabet,
                               special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
                               show_progress=show_progress)
    backend.train_from_iterator(_read_lines(corpus), trainer=trainer, length=sum(entry.lines for entry in corpus))

    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    if [vocab[token] for token in tokens] != list(range(len(tokens))):
        raise RuntimeError("the WordPiece trainer returned non-contiguous ids")  # a bug, not user input
    if len(tokens) <= len(SPECIAL_TOKENS):
        names = ", ".join(str(entry.path) for entry in corpus)
        raise BertforgeError("the corpus yielded no wordpieces (no text left after cleaning)", path=names)

    out_dir = Path(out_dir)
    write_vocab(out_dir / VOCAB_FILE, tokens)
    tokenizer = BertTokenizer(out_dir / VOCAB_FILE, lowercase=lowercase, strip_accents=strip_accents,
                              tokenize_chinese_chars=tokenize_chinese_chars, model_max_length=config.model_max_length)
    tokenizer.save_pretrained(out_dir)
    return tokenizer
