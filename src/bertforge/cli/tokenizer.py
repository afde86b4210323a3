"""`bertforge tokenizer train`: learn a WordPiece vocab from text files.

Writes DIR/vocab.txt and DIR/tokenizer_config.json (which transformers' BertTokenizer loads),
shows the trainer's progress bars on a terminal (unless --quiet) and ends with a one-line summary.
The options are `bertforge.tokenizer.VocabConfig` (flags and `--help` from its fields) plus the
files, the output directory and `--quiet`; `--cased` is kept as a spelling of `--no-lowercase`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from bertforge.cli.command import Command, option
from bertforge.errors import BertforgeError
from bertforge.fileio import OVERWRITE_HELP
from bertforge.tokenizer.train import VocabConfig


@dataclass
class TokenizerTrainOptions(VocabConfig):
    """`VocabConfig` (the vocab's settings) plus the files, the output and two CLI switches."""

    files: list[Path] = option(default_factory=list, help="plain UTF-8 text files to learn the vocab from")
    out: Path | None = option(None, help="directory for vocab.txt and tokenizer_config.json")
    cased: bool | None = option(None, help="same as --no-lowercase (--no-cased is --lowercase)")
    quiet: bool = option(False, help="no progress bars")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


def run_train(options: TokenizerTrainOptions) -> int:
    import dataclasses
    import sys
    import time

    from bertforge.tokenizer import train_vocab

    if not options.files:
        raise BertforgeError("no training files: pass --files FILE [FILE ...]")
    if options.out is None:
        raise BertforgeError("no output directory: pass --out DIR")
    config = VocabConfig(**{f.name: getattr(options, f.name) for f in fields(VocabConfig)})
    if options.cased is not None:
        config = dataclasses.replace(config, lowercase=not options.cased)
    started = time.perf_counter()
    # The trainer's bars print bare newlines to stdout when it is not a terminal.
    tokenizer = train_vocab(options.files, options.out, config, overwrite=options.overwrite,
                            show_progress=not options.quiet and sys.stdout.isatty() and sys.stderr.isatty())
    seconds = time.perf_counter() - started
    megabytes = sum(path.stat().st_size for path in options.files) / 1e6
    print(f"trained {tokenizer.vocab_size} tokens ({'uncased' if config.lowercase else 'cased'}) from "
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
