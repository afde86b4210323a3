"""`bertforge tokenizer train`: learn a WordPiece vocab from text files.

Writes DIR/vocab.txt and DIR/tokenizer_config.json (which transformers' BertTokenizer loads),
shows the trainer's progress bars on a terminal (unless --quiet) and ends with a one-line summary.
`--cased` is kept as a spelling of `--no-lowercase`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertforge.cli.command import Command, option
from bertforge.errors import BertforgeError


@dataclass
class TokenizerTrainOptions:
    files: list[Path] = option(default_factory=list, help="plain UTF-8 text files to learn the vocab from")
    vocab_size: int = option(30522, help="largest vocab size, special tokens and alphabet included")
    lowercase: bool = option(True, help="uncased vocab: lower-case and strip accents (--no-lowercase: cased)")
    cased: bool | None = option(None, help="same as --no-lowercase (--no-cased is --lowercase)")
    out: Path | None = option(None, help="directory for vocab.txt and tokenizer_config.json")
    min_frequency: int = option(2, help="merge only pairs seen at least this often")
    limit_alphabet: int = option(1000, help="keep at most this many distinct characters")
    strip_accents: bool | None = option(None, help="strip accents (default: follow --lowercase)")
    tokenize_chinese_chars: bool = option(True, help="split CJK ideographs into single characters")
    model_max_length: int = option(512, help="model_max_length written to tokenizer_config.json")
    quiet: bool = option(False, help="no progress bars")


def run_train(options: TokenizerTrainOptions) -> int:
    import sys
    import time

    from bertforge.tokenizer import train_vocab

    if not options.files:
        raise BertforgeError("no training files: pass --files FILE [FILE ...]")
    if options.out is None:
        raise BertforgeError("no output directory: pass --out DIR")
    lowercase = options.lowercase
    if options.cased is not None:
        lowercase = not options.cased
    started = time.perf_counter()
    tokenizer = train_vocab(
        options.files, options.out, vocab_size=options.vocab_size, lowercase=lowercase,
        min_frequency=options.min_frequency, limit_alphabet=options.limit_alphabet,
        strip_accents=options.strip_accents, tokenize_chinese_chars=options.tokenize_chinese_chars,
        model_max_length=options.model_max_length,
        # The trainer's bars print bare newlines to stdout when it is not a terminal.
        show_progress=not options.quiet and sys.stdout.isatty() and sys.stderr.isatty())
    seconds = time.perf_counter() - started
    megabytes = sum(path.stat().st_size for path in options.files) / 1e6
    print(f"trained {tokenizer.vocab_size} tokens ({'uncased' if lowercase else 'cased'}) from "
          f"{len(options.files)} file{'s' if len(options.files) != 1 else ''} ({megabytes:.1f} MB) "
          f"in {seconds:.1f}s -> {options.out / 'vocab.txt'}")
    return 0


COMMANDS = [
    Command(("tokenizer", "train"), TokenizerTrainOptions, run_train,
            "learn a WordPiece vocab (vocab.txt + tokenizer_config.json) from text files",
            examples=[
                "bertforge tokenizer train --files corpus/*.txt --vocab-size 30522 --out my-vocab",
                "bertforge tokenizer train --files wiki.txt books.txt --vocab-size 8000 --no-lowercase --out cased-8k",
                "bertforge tokenizer train --files zh.txt --vocab-size 21128 --out zh-vocab min_frequency=5",
            ]),
]
