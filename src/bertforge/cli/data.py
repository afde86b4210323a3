"""`bertforge data prepare`: raw text to memory-mapped pretraining shards.

A thin front for `bertforge.data.prepare_corpus`: the options are `PrepareConfig` itself (its
fields, their types, defaults and docstrings make the flags and `--help`), plus `--quiet`. The
masking section has dotted flags (`--masking.masked-lm-prob 0.2`). The progress bar (MB/s,
instances/s) appears on a terminal; the summary is printed at the end unless `--quiet`. Bad
input (a missing or binary file, an empty corpus, invalid UTF-8 under `--strict`) is a one-line
`error: <file>[:<line>]: ...` with exit status 2.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from bertforge.cli.command import Command, option
from bertforge.data.prepare import PrepareConfig


@dataclass(kw_only=True)
class DataPrepareOptions(PrepareConfig):
    quiet: bool = option(False, help="no progress bar and no summary")


def run_prepare(options: DataPrepareOptions) -> int:
    from bertforge.data.prepare import prepare_corpus

    config = PrepareConfig(**{f.name: getattr(options, f.name) for f in fields(PrepareConfig) if f.init})
    prepare_corpus(config, progress=not options.quiet)
    return 0


COMMANDS = [
    Command(("data", "prepare"), DataPrepareOptions, run_prepare,
            "turn raw text into memory-mapped pretraining shards (NSP/SOP pairs or packed MLM)",
            section_flags=True, flag_names={"inputs": "--input"},
            examples=[
                "bertforge data prepare --input corpus/ --vocab vocab.txt --out data/ --mode nsp "
                "--max-seq-length 128 --workers 8",
                "bertforge data prepare --input 'wiki/*.jsonl.gz' --text-field text --vocab vocab.txt "
                "--out data-mlm/ --mode mlm --max-seq-length 512",
                "bertforge data prepare --input zh.txt --vocab bert-base-chinese-vocab.txt --out data-zh/ "
                "--whole-word-mask jieba",
                "bertforge data prepare --input books/ --vocab vocab.txt --out data-static/ --static-masks "
                "--dupe-factor 10 --eval-fraction 0.001 --masking.masked-lm-prob 0.15",
            ]),
]
