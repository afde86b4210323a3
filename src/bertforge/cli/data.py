"""`bertforge data prepare`: raw text to memory-mapped pretraining shards.

A thin front for `bertforge.data.prepare_corpus`: every option is a field of `PrepareConfig`.
The progress bar (MB/s, instances/s) appears on a terminal; the summary is printed at the end
unless `--quiet`. Bad input (a missing or binary file, an empty corpus, invalid UTF-8 under
`--strict`) is a one-line `error: <file>[:<line>]: ...` with exit status 2.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from bertforge.cli.command import Command, option
from bertforge.errors import BertforgeError


@dataclass
class DataPrepareOptions:
    input: list[str] = option(default_factory=list,
                              help="text files, directories or glob patterns (UTF-8, optionally .gz)")
    vocab: str = option("", help="vocab.txt or a tokenizer directory (vocab.txt + tokenizer_config.json)")
    out: str = option("", help="output directory (manifest.json, vocab.txt, train/, eval/)")
    mode: Literal["nsp", "sop", "mlm"] = option("nsp", help="nsp: BERT sentence pairs; sop: ALBERT sentence order; mlm: RoBERTa packing")
    max_seq_length: int = option(128, help="tokens per instance, [CLS] and [SEP] included")
    short_seq_prob: float = option(0.1, help="fraction of pair instances with a shorter random length")
    layout: Literal["auto", "lines", "paragraphs", "jsonl"] = option("auto", help="lines (one sentence a line), paragraphs, jsonl, or auto (by file name)")
    text_field: str = option("text", help="JSON field holding a document's text (jsonl)")
    eval_fraction: float = option(0.01, help="fraction of documents held out for the eval split")
    whole_word_mask: Literal["none", "wordpiece", "jieba"] = option("none", help="none, wordpiece (## continuations) or jieba (Chinese words)")
    masking: Literal["dynamic", "static"] = option("dynamic", help="dynamic (a fresh mask every epoch) or static (masks fixed now)")
    dupe_factor: int = option(1, help="copies of the data with different pairs (and static masks)")
    masked_lm_prob: float = option(0.15, help="fraction of tokens to predict")
    max_predictions_per_seq: int | None = option(None, help="cap on predictions (default: ceil(0.15 x length))")
    lowercase: bool | None = option(None, help="lower-case the text (default: from the vocab)")
    seed: int = option(0, help="random seed: the same seed gives the same bytes")
    workers: int = option(0, help="worker processes (0: one per core)")
    chunk_mb: float = option(1.0, help="MB of text per work unit and shard")
    strict: bool = option(False, help="invalid UTF-8 is an error instead of being replaced")
    overwrite: bool = option(False, help="replace an output directory prepared with other settings")
    quiet: bool = option(False, help="no progress bar and no summary")


def run_prepare(options: DataPrepareOptions) -> int:
    from bertforge.data.prepare import PrepareConfig, prepare_corpus

    if not options.input:
        raise BertforgeError("no input: pass --input FILE|DIR|GLOB [...]")
    if not options.vocab:
        raise BertforgeError("no vocab: pass --vocab vocab.txt (or a tokenizer directory)")
    if not options.out:
        raise BertforgeError("no output directory: pass --out DIR")
    settings = {field.name: getattr(options, field.name) for field in fields(options)
                if field.name not in ("input", "quiet")}
    config = PrepareConfig(inputs=list(options.input), **settings)
    prepare_corpus(config, progress=not options.quiet)
    return 0


COMMANDS = [
    Command(("data", "prepare"), DataPrepareOptions, run_prepare,
            "turn raw text into memory-mapped pretraining shards (NSP/SOP pairs or packed MLM)",
            examples=[
                "bertforge data prepare --input corpus/ --vocab vocab.txt --out data/ --mode nsp "
                "--max-seq-length 128 --workers 8",
                "bertforge data prepare --input 'wiki/*.jsonl.gz' --text-field text --vocab vocab.txt "
                "--out data-mlm/ --mode mlm --max-seq-length 512",
                "bertforge data prepare --input zh.txt --vocab bert-base-chinese-vocab.txt --out data-zh/ "
                "--whole-word-mask jieba",
                "bertforge data prepare --input books/ --vocab vocab.txt --out data-static/ --masking static "
                "--dupe-factor 10 --eval-fraction 0.001",
            ]),
]
