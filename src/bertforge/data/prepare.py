"""`prepare_corpus`: raw text to memory-mapped pretraining shards, in parallel, resumable.

The main process only reads: it streams the inputs as chunks of about `chunk_mb` of text, cut
at document boundaries (`documents.iter_chunks`). Each chunk goes to a worker process, which
decodes and splits it into documents and sentences, tokenizes every sentence in one call of the
Rust `tokenizers` library, builds the instances (`instances`), and writes one train and one eval
shard (`shards`), each atomically. When all chunks are done, `manifest.json` is written last: a
directory without it is incomplete.

Why this shape:
- Memory is flat in the corpus size: at most 2 x workers chunks are in flight, and nothing but
  counts is kept per chunk (google-research/bert holds every document of the input in memory).
- Deterministic whatever the number of workers: a chunk's cut points depend only on the bytes,
  and its instances only on (seed, chunk index, chunk bytes), so 1 or 16 workers write the same
  bytes to the same shard names.
- Resumable: a shard is reused when its header carries the digest of the chunk's bytes and the
  hash of the settings, so a killed run started again redoes only the missing chunks and ends
  with the same files as an uninterrupted run.

The random-next document of an NSP pair comes from the same chunk (`instances` docstring).
Documents are held out for evaluation whole (`eval_fraction`, drawn per document; the first
chunk gives at least one, so a small corpus still has an eval split), so no sentence of an eval
instance also appears in a training instance's real pair.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from bertforge.errors import BertforgeError
from bertforge.fileio import OVERWRITE_HELP, atomic_write_json, prepare_output
from bertforge.progress import progress_bar
from bertforge.version import __version__
from bertforge.data.documents import Chunk, InputFile, Layout, TextStats, iter_chunks, parse_piece, resolve_inputs
from bertforge.data.instances import (PairInstance, create_packed_instances, create_pair_instances,
                                      split_long_sentences)
from bertforge.data.masking import PREPARE_STREAM, STATIC_MASK_STREAM, MaskingConfig, VocabTables, mask_sequence
from bertforge.data.shards import (FORMAT, FORMAT_VERSION, MANIFEST, read_header, read_manifest, shard_name,
                                   token_dtype, write_shard)

SPLITS = ("train", "eval")
_OUR_ENTRIES = frozenset({MANIFEST, "train", "eval", "vocab.txt", "tokenizer_config.json"})
_CONTINUATION_BIT = 1 << 30
"""Chinese whole-word masking: set on a token id that continues a segmented word, while the id
travels through instance creation (which never looks at values); stripped before writing."""


@dataclass
class PrepareSettings:
    """How `prepare_corpus` turns text into instances: every setting but the paths and the masking.

    This is the pretraining recipe's `data.prepare` section; `PrepareConfig` adds the inputs,
    the vocab, the output directory and the one `MaskingConfig` (the recipe's `data.masking`).
    """

    lowercase: bool | None = None
    """Lower-case the text; None: from tokenizer_config.json or guessed from the vocab (a vocab
    the pretraining recipe trains is uncased unless this is false)."""
    mode: Literal["nsp", "sop", "mlm"] = "nsp"
    """nsp: BERT's sentence pairs; sop: ALBERT's sentence order; mlm: RoBERTa's packing."""
    max_seq_length: int = 128
    """Tokens per instance, [CLS] and [SEP] included; at most the model's max_position_embeddings."""
    short_seq_prob: float = 0.1
    """Fraction of pair instances with a shorter random target length (nsp, sop)."""
    layout: Layout = "auto"
    """lines (one sentence a line), paragraphs, jsonl, or auto (by file name)."""
    text_field: str = "text"
    """The JSON field that holds a document's text (jsonl layout)."""
    eval_fraction: float = 0.01
    """Fraction of documents held out for the eval split."""
    whole_word_mask: Literal["none", "wordpiece", "jieba"] = "none"
    """Default masking unit: tokens; wordpiece words (## continuations); jieba-segmented
    Chinese words (their boundaries are stored in the shards)."""
    static_masks: bool = False
    """Fix the masks here (google-research/bert) instead of drawing them afresh each time an
    instance is served (dynamic masking, RoBERTa)."""
    dupe_factor: int = 1
    """Copies of the data, each with its own pairs (and masks, when static). google used 10."""
    seed: int = 0
    """Random seed: the same seed gives the same bytes."""
    workers: int = 0
    """Worker processes; 0: one per CPU core."""
    chunk_mb: float = 1.0
    """Text per work unit and shard, in MB (also the pool of random-next documents)."""
    strict: bool = False
    """Invalid UTF-8 is an error instead of being replaced and counted."""
    overwrite: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self) -> None:
        if self.mode not in ("nsp", "sop", "mlm"):
            raise BertforgeError(f"mode must be nsp, sop or mlm, got {self.mode!r}")
        if self.whole_word_mask not in ("none", "wordpiece", "jieba"):
            raise BertforgeError(f"whole_word_mask must be none, wordpiece or jieba, got {self.whole_word_mask!r}")
        minimum = 4 if self.mode != "mlm" else 3
        if not isinstance(self.max_seq_length, int) or self.max_seq_length < minimum:
            raise BertforgeError(f"max_seq_length must be an integer of at least {minimum}, got {self.max_seq_length!r}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise BertforgeError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise BertforgeError(f"eval_fraction must be in [0, 1), got {self.eval_fraction!r}")
        if not isinstance(self.dupe_factor, int) or self.dupe_factor < 1:
            raise BertforgeError(f"dupe_factor must be a positive integer, got {self.dupe_factor!r}")
        if self.dupe_factor > 1 and self.mode == "mlm" and not self.static_masks:
            raise BertforgeError("dupe_factor > 1 in mlm mode with dynamic masking would only repeat identical "
                                 "sequences (packing is deterministic); use --static-masks or dupe_factor 1")
        if self.workers < 0:
            raise BertforgeError(f"workers must be 0 (all cores) or positive, got {self.workers!r}")
        if not self.chunk_mb > 0:
            raise BertforgeError(f"chunk_mb must be positive, got {self.chunk_mb!r}")


@dataclass(kw_only=True)
class PrepareConfig(PrepareSettings):
    """Settings of `bertforge data prepare` (see the module docstring and `--help`)."""

    inputs: list[str]
    """Text files, directories or glob patterns (UTF-8, optionally gzip-compressed)."""
    vocab: str
    """vocab.txt, or a tokenizer directory (vocab.txt + tokenizer_config.json)."""
    out: str
    """Output directory: manifest.json, vocab.txt, tokenizer_config.json, train/, eval/."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Masking rate and cap (recorded in the manifest), and the masks themselves when static."""

    def __post_init__(self) -> None:
        if isinstance(self.inputs, (str, Path)):
            self.inputs = [str(self.inputs)]
        self.inputs = [str(item) for item in self.inputs]
        self.vocab, self.out = str(self.vocab), str(self.out)
        super().__post_init__()

    @property
    def whole_word(self) -> bool:
        """Whether static masks cover whole words: the masking's choice, else the prepared unit's."""
        if self.masking.whole_word_mask is not None:
            return self.masking.whole_word_mask
        return self.whole_word_mask != "none"

    @property
    def chunk_bytes(self) -> int:
        return max(64, int(self.chunk_mb * 1_000_000))

    def settings(self) -> dict[str, Any]:
        """Everything that changes the bytes of the output (not inputs, paths, workers, strict).

        Flat, under the names data was prepared with before the masking became one section, so
        that data prepared then keeps its hash. The 80/10/10 split and a whole-word override
        shape only static masks, and enter only when static masks take them from the defaults.
        """
        masking = self.masking
        result: dict[str, Any] = {
            "lowercase": self.lowercase, "mode": self.mode, "max_seq_length": self.max_seq_length,
            "short_seq_prob": self.short_seq_prob, "layout": self.layout, "text_field": self.text_field,
            "eval_fraction": self.eval_fraction, "whole_word_mask": self.whole_word_mask,
            "masking": "static" if self.static_masks else "dynamic", "dupe_factor": self.dupe_factor,
            "masked_lm_prob": masking.masked_lm_prob, "max_predictions_per_seq": masking.max_predictions_per_seq,
            "seed": self.seed, "chunk_mb": self.chunk_mb}
        if self.static_masks:
            defaults = MaskingConfig()
            for name in ("mask_token_prob", "random_token_prob", "whole_word_mask"):
                if getattr(masking, name) != getattr(defaults, name):
                    result[f"masking.{name}"] = getattr(masking, name)
        return result


# -- the tokenizer and what workers need -------------------------------------------------------


def load_tokenizer(vocab: str | Path, lowercase: bool | None = None):
    """A vocab file, or a tokenizer directory with its options (`lowercase` overrides its casing)."""
    from bertforge.tokenizer import BertTokenizer

    path = Path(vocab)
    if not path.is_dir():
        return BertTokenizer(path, lowercase=lowercase)
    tokenizer = BertTokenizer.from_pretrained(path)
    if lowercase is None or lowercase == tokenizer.lowercase:
        return tokenizer
    return BertTokenizer(path / "vocab.txt", lowercase=lowercase, strip_accents=tokenizer.strip_accents,
                         tokenize_chinese_chars=tokenizer.tokenize_chinese_chars,
                         model_max_length=tokenizer.model_max_length)


@dataclass
class _Setup:
    """What a worker needs, picklable."""

    config: PrepareConfig
    out: str
    """The output directory, which also holds the tokenizer (vocab.txt, tokenizer_config.json)."""
    settings_hash: str


class _Worker:
    def __init__(self, setup: _Setup):
        from bertforge.tokenizer import BertTokenizer

        self.setup = setup
        self.config = setup.config
        self.out = Path(setup.out)
        self.tokenizer = BertTokenizer.from_pretrained(self.out)
        tokenizer = self.tokenizer
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.tables = VocabTables.from_tokens(tokenizer.tokens, tokenizer.all_special_ids, tokenizer.mask_token_id)
        self.masking = self.config.masking
        self.jieba = None
        if self.config.whole_word_mask == "jieba":
            self.jieba = _load_jieba()

    # ---- one chunk

    def process(self, chunk: Chunk, digest: str) -> dict[str, Any]:
        config = self.config
        stats = TextStats()
        documents: list[list[str]] = []
        replaced_by_file: dict[str, int] = {}
        for piece in chunk.pieces:
            piece_documents, piece_stats, _ = parse_piece(piece, strict=config.strict, text_field=config.text_field)
            documents.extend(piece_documents)
            stats.add(piece_stats)
            if piece_stats.replaced_characters:
                replaced_by_file[piece.path] = replaced_by_file.get(piece.path, 0) + piece_stats.replaced_characters
        token_documents, long_split = self._tokenize(documents)
        rng = np.random.default_rng([PREPARE_STREAM, config.seed, chunk.index])
        draws = rng.random(len(token_documents))
        held_out = draws < config.eval_fraction
        if chunk.index == 0 and config.eval_fraction > 0 and not held_out.any() and len(draws) >= 2:
            # A small corpus must not end up with an empty eval split: the first chunk gives
            # at least its lowest-drawn document.
            held_out[int(np.argmin(draws))] = True
        chunk_info = {"index": chunk.index, "digest": digest, "settings_hash": self.setup.settings_hash,
                      "text": stats.as_dict(), "long_sentences_split": long_split,
                      "replaced_by_file": replaced_by_file}
        results: dict[str, Any] = {"chunk": chunk_info, "splits": {}}
        # Eval first, train last: a chunk counts as done when its train shard exists.
        for split_id, split in reversed(list(enumerate(SPLITS))):
            chosen = [document for document, is_eval in zip(token_documents, held_out)
                      if bool(is_eval) == (split == "eval")]
            arrays, counts = self._instances(chosen, chunk.index, split_id)
            counts["documents"] = len(chosen)
            meta = {"format": FORMAT, "version": FORMAT_VERSION, "split": split, "chunk": chunk_info,
                    "counts": counts}
            write_shard(self.out / split / shard_name(chunk.index), arrays, meta)
            results["splits"][split] = counts
        return results

    def _tokenize(self, documents: list[list[str]]) -> tuple[list[list[list[int]]], int]:
        sentences = [sentence for document in documents for sentence in document]
        if self.jieba is None:
            ids = self.tokenizer.encode_batch_ids(sentences) if sentences else []
        else:
            ids = self._tokenize_words(sentences)
        limit = self.config.max_seq_length - (2 if self.config.mode == "mlm" else 3)
        result: list[list[list[int]]] = []
        position = 0
        long_split = 0
        for document in documents:
            token_sentences = [sentence for sentence in ids[position:position + len(document)] if sentence]
            position += len(document)
            if any(len(sentence) > limit for sentence in token_sentences):
                long_split += sum(len(sentence) > limit for sentence in token_sentences)
                token_sentences = split_long_sentences(token_sentences, limit)
            if token_sentences:
                result.append(token_sentences)
        return result, long_split

    def _tokenize_words(self, sentences: list[str]) -> list[list[int]]:
        """Ids with the continuation bit set on tokens inside a jieba word (Chinese BERT-wwm)."""
        if not sentences:
            return []
        encodings = self.tokenizer.backend.encode_batch(sentences, add_special_tokens=False)
        result = []
        for sentence, encoding in zip(sentences, encodings):
            starts = {start for _, start, _ in self.jieba.tokenize(sentence)}
            result.append([token_id | _CONTINUATION_BIT if index and (start not in starts or token.startswith("##"))
                           else token_id
                           for index, (token_id, token, (start, _)) in
                           enumerate(zip(encoding.ids, encoding.tokens, encoding.offsets))])
        return result

    def _instances(self, documents: list[list[list[int]]], chunk_index: int, split_id: int
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        config = self.config
        rng = np.random.default_rng([PREPARE_STREAM, config.seed, chunk_index, split_id + 1])
        pairs: list[PairInstance] = []
        packed: list[list[int]] = []
        for _ in range(config.dupe_factor):
            if config.mode == "mlm":
                packed.extend(create_packed_instances(documents, max_num_tokens=config.max_seq_length - 2,
                                                      separator_id=self.sep_id))
            else:
                for index in range(len(documents)):
                    pairs.extend(create_pair_instances(documents, index, max_num_tokens=config.max_seq_length - 3,
                                                       short_seq_prob=config.short_seq_prob, rng=rng,
                                                       task=config.mode))
        count = len(packed) if config.mode == "mlm" else len(pairs)
        # WHY (google): the instances of a document are consecutive; shuffling them spreads
        # each document over the shard for readers that do not shuffle.
        order = rng.permutation(count)
        cls_id, sep_id = self.cls_id, self.sep_id
        flat: list[int] = []
        lengths = np.empty(count, dtype=np.int64)
        a_lengths = np.empty(count, dtype=np.int32)
        labels = np.empty(count if config.mode != "mlm" else 0, dtype=np.uint8)
        # One list grown in place, then one conversion: the cheapest way from the tokenizer's
        # Python ints to an array (a list per instance would double the time of this step).
        for row, index in enumerate(order.tolist()):
            if config.mode == "mlm":
                tokens = packed[index]
                flat.append(cls_id)
                flat += tokens
                flat.append(sep_id)
                lengths[row] = a_lengths[row] = len(tokens) + 2
            else:
                tokens_a, tokens_b, labels[row] = pairs[index]
                flat.append(cls_id)
                flat += tokens_a
                flat.append(sep_id)
                flat += tokens_b
                flat.append(sep_id)
                a_lengths[row] = len(tokens_a) + 2
                lengths[row] = len(tokens_a) + len(tokens_b) + 3
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens_array = np.array(flat, dtype=np.int64) if flat else np.zeros(0, np.int64)
        word_starts = None
        if self.jieba is not None:
            word_starts = (tokens_array & _CONTINUATION_BIT) == 0
            tokens_array &= _CONTINUATION_BIT - 1
        counts: dict[str, Any] = {"instances": count, "tokens": int(offsets[-1])}
        arrays: dict[str, np.ndarray] = {}
        if config.static_masks:
            tokens_array, mask_arrays, predictions = self._static_masks(tokens_array, offsets, word_starts,
                                                                        chunk_index, split_id)
            arrays.update(mask_arrays)
            counts["predictions"] = predictions
        arrays["tokens"] = tokens_array.astype(self.dtype)
        arrays["offsets"] = offsets
        arrays["segment_a_lengths"] = a_lengths
        if config.mode != "mlm":
            arrays["labels"] = labels
            counts["label_1"] = int(labels.sum())
        if word_starts is not None:
            arrays["word_starts"] = word_starts.astype(np.uint8)
        # A fixed array order: it is part of the shard's bytes.
        ordered = {name: arrays[name] for name in
                   ("tokens", "offsets", "segment_a_lengths", "labels", "word_starts",
                    "mask_positions", "mask_offsets", "mask_labels") if name in arrays}
        return ordered, counts

    def _static_masks(self, flat: np.ndarray, offsets: np.ndarray, word_starts: np.ndarray | None,
                      chunk_index: int, split_id: int) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
        config = self.config
        whole_word = config.whole_word
        max_predictions = self.masking.max_predictions(config.max_seq_length)
        masked_flat = flat.copy()
        positions: list[np.ndarray] = []
        mask_offsets = np.zeros(len(offsets), dtype=np.int64)
        for index in range(len(offsets) - 1):
            start, end = int(offsets[index]), int(offsets[index + 1])
            rng = np.random.default_rng([STATIC_MASK_STREAM, config.seed, chunk_index, split_id, index])
            masked, labels = mask_sequence(flat[start:end], tables=self.tables, rng=rng, config=self.masking,
                                           max_predictions=max_predictions, whole_word=whole_word,
                                           word_starts=None if word_starts is None else word_starts[start:end])
            masked_flat[start:end] = masked
            chosen = np.flatnonzero(labels != -100)
            positions.append(chosen)
            mask_offsets[index + 1] = mask_offsets[index] + chosen.size
        all_positions = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        starts = np.repeat(offsets[:-1], np.diff(mask_offsets))
        mask_labels = flat[starts + all_positions] if all_positions.size else np.zeros(0, np.int64)
        arrays = {"mask_positions": all_positions.astype(np.uint16 if self.config.max_seq_length <= 1 << 16 else np.uint32),
                  "mask_offsets": mask_offsets, "mask_labels": mask_labels.astype(self.dtype)}
        return masked_flat, arrays, int(all_positions.size)


def _load_jieba():
    try:
        import jieba
    except ImportError:
        raise BertforgeError("whole_word_mask=jieba needs the jieba package: pip install jieba") from None
    import logging

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba.dt


_WORKER: _Worker | None = None


def _init_worker(setup: _Setup) -> None:
    # Each worker is one process on one core: the Rust thread pool inside it would only fight
    # the other workers for the same cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER
    _WORKER = _Worker(setup)


def _work(chunk: Chunk, digest: str) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER.process(chunk, digest)


# -- the main process --------------------------------------------------------------------------


def settings_hash(config: PrepareConfig, tokenizer: Any) -> str:
    """What the shards' bytes depend on besides the input: settings, vocab, tokenizer options."""
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "settings": config.settings(),
               "vocab_hash": tokenizer.vocab_hash, "tokenizer": tokenizer.config_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _finished_shard(out: Path, chunk: Chunk, digest: str, expected_hash: str) -> dict[str, Any] | None:
    """The results of a chunk already written by an earlier run, or None."""
    results: dict[str, Any] = {"splits": {}}
    for split in SPLITS:
        path = out / split / shard_name(chunk.index)
        if not path.exists():
            return None
        try:
            meta = read_header(path).get("meta", {})
        except BertforgeError:
            return None
        info = meta.get("chunk", {})
        if info.get("digest") != digest or info.get("settings_hash") != expected_hash:
            return None
        results["chunk"] = info
        results["splits"][split] = meta["counts"]
    return results


def _prepare_directory(out: Path, manifest: dict[str, Any] | None, overwrite: bool) -> None:
    if out.exists():
        foreign = [entry.name for entry in out.iterdir()
                   if entry.name not in _OUR_ENTRIES and not entry.name.startswith(".")]
        if foreign:
            raise BertforgeError(f"output directory holds files that are not prepared data "
                                 f"({', '.join(sorted(foreign)[:3])}); choose an empty or new directory", path=out)
        if overwrite or manifest is not None:
            (out / MANIFEST).unlink(missing_ok=True)
            for split in SPLITS:
                shutil.rmtree(out / split, ignore_errors=True)
    for split in SPLITS:
        directory = out / split
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)  # a killed writer's temporary file


def _default_log(message: str) -> None:
    print(message, file=sys.stderr)


def prepare_corpus(config: PrepareConfig, *, progress: bool = True, bar: bool | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prepare `config.inputs` into `config.out`; returns the manifest (also in manifest.json).

    With `progress`, shows a progress bar (MB/s and instances/s; by default only when stderr is
    a terminal, `bar` forces it on or off) and logs a summary at the end. Warnings (invalid
    UTF-8 replaced, per file) are logged always. `log` defaults to printing on stderr.

    Workers are started with the "spawn" method (safe beside threads and the tokenizers thread
    pool), so a script that calls this with workers > 1 must do so under
    `if __name__ == "__main__":`, as with any multiprocessing code.
    """
    log = log or _default_log
    started = time.perf_counter()
    # Data prepared with the same settings and inputs is kept as it is (a re-run does nothing),
    # so only the place itself is checked here; other data there is refused below.
    out = prepare_output(config.out, kind="directory", overwrite=config.overwrite)
    files = resolve_inputs(config.inputs, config.layout)
    if all(file.size == 0 for file in files):
        raise BertforgeError("the corpus is empty: every input file is empty",
                             path=files[0].path if len(files) == 1 else None)
    tokenizer = load_tokenizer(config.vocab, config.lowercase)
    if config.whole_word_mask == "jieba":
        _load_jieba()  # fail here, before any worker starts, when jieba is missing
    expected_hash = settings_hash(config, tokenizer)
    inputs = [{"path": str(file.path), "bytes": file.size} for file in files]
    existing = read_manifest(out / MANIFEST)
    if existing is not None and not config.overwrite:
        if existing.get("settings_hash") == expected_hash and existing.get("inputs") == inputs:
            if progress:
                log(f"{out} is already prepared with these settings and inputs; nothing to do")
            return existing
        raise BertforgeError("output directory holds data prepared with other settings or inputs; "
                             "pass --overwrite to replace it", path=out)
    _prepare_directory(out, existing, config.overwrite)
    tokenizer.save_pretrained(out)
    setup = _Setup(config=config, out=str(out), settings_hash=expected_hash)
    show_bar = progress and (sys.stderr.isatty() if bar is None else bar)
    results, reused = _process_chunks(files, config, setup, show_bar, started)

    manifest = _build_manifest(config, tokenizer, files, inputs, results, expected_hash)
    counts = manifest["counts"]
    if counts["documents"] == 0:
        raise BertforgeError(f"the corpus is empty: no text found in {len(files)} input file(s)",
                             path=files[0].path if len(files) == 1 else None)
    if counts["instances"]["train"] == 0:
        raise BertforgeError(f"no training instances could be made from {counts['documents']} document(s) "
                             f"(too short for {config.mode} pairs?)")
    _remove_stale_shards(out, len(results))
    atomic_write_json(out / MANIFEST, manifest)
    elapsed = time.perf_counter() - started
    for path, replaced in sorted(manifest["replaced_by_file"].items()):
        log(f"warning: {path}: {replaced:,} invalid UTF-8 sequence(s) replaced with U+FFFD "
            f"(--strict makes this an error)")
    if progress:
        if reused:
            log(f"resumed: {reused} of {len(results)} chunks were already done")
        log(format_summary(manifest, elapsed))
    return manifest


def _process_chunks(files: list[InputFile], config: PrepareConfig, setup: _Setup, show_bar: bool,
                    started: float) -> tuple[dict[int, dict[str, Any]], int]:
    """Every chunk's results (reused from finished shards, or made now), and how many were reused."""
    out = Path(setup.out)
    total_bytes = sum(file.size for file in files)
    compressed = _any_compressed(files)
    workers = config.workers or _available_cores()
    if total_bytes <= config.chunk_bytes and not compressed:
        workers = 1  # one chunk: starting worker processes would only cost time
    results: dict[int, dict[str, Any]] = {}
    bar = progress_bar(None if compressed else total_bytes, 0, show_bar, "preparing", unit="B", unit_scale=True,
                       mininterval=0.5)
    state = {"instances": 0, "reused": 0}

    def record(index: int, result: dict[str, Any], num_bytes: int) -> None:
        results[index] = result
        state["instances"] += sum(counts["instances"] for counts in result["splits"].values())
        bar.update(num_bytes)
        rate = state["instances"] / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"{rate:,.0f} instances/s", refresh=False)

    try:
        if workers == 1:
            worker = _Worker(setup)
            for chunk in iter_chunks(files, config.chunk_bytes):
                digest = chunk.digest()
                done = _finished_shard(out, chunk, digest, setup.settings_hash)
                state["reused"] += done is not None
                record(chunk.index, done or worker.process(chunk, digest), chunk.num_bytes)
        else:
            _run_pool(files, config, setup, out, setup.settings_hash, workers, record, state)
    finally:
        bar.close()
    return results, state["reused"]


def _run_pool(files: list[InputFile], config: PrepareConfig, setup: _Setup, out: Path, expected_hash: str,
              workers: int, record: Callable[[int, dict[str, Any], int], None], state: dict[str, int]) -> None:
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                   initializer=_init_worker, initargs=(setup,))
    pending: dict[Future, tuple[int, int]] = {}

    def collect(block: bool) -> None:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED, timeout=None if block else 0)
        for future in done:
            index, num_bytes = pending.pop(future)
            record(index, future.result(), num_bytes)

    try:
        for chunk in iter_chunks(files, config.chunk_bytes):
            digest = chunk.digest()
            done = _finished_shard(out, chunk, digest, expected_hash)
            if done is not None:
                state["reused"] += 1
                record(chunk.index, done, chunk.num_bytes)
                continue
            # At most two chunks per worker in flight: memory stays flat (Pool.imap would read
            # the whole corpus ahead into its task queue).
            while len(pending) >= 2 * workers:
                collect(block=True)
            pending[executor.submit(_work, chunk, digest)] = (chunk.index, chunk.num_bytes)
            if pending:
                collect(block=False)
        while pending:
            collect(block=True)
    except BrokenProcessPool:
        executor.shutdown(wait=False, cancel_futures=True)
        raise BertforgeError("a worker process died: killed for lack of memory, or it could not start (a script "
                             "that calls prepare_corpus with workers > 1 must do so under "
                             "`if __name__ == \"__main__\":`); finished shards are kept, run again to resume") from None
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _any_compressed(files: list[InputFile]) -> bool:
    for file in files:
        with open(file.path, "rb") as handle:
            if handle.read(2) == b"\x1f\x8b":
                return True
    return False


def _remove_stale_shards(out: Path, num_chunks: int) -> None:
    """Shards of chunks past the end (an earlier run over a longer input) are not ours anymore."""
    for split in SPLITS:
        for path in (out / split).glob("shard-*.bin"):
            try:
                index = int(path.stem.split("-")[1])
            except (IndexError, ValueError):
                continue
            if index >= num_chunks:
                path.unlink(missing_ok=True)


def _build_manifest(config: PrepareConfig, tokenizer, files: list[InputFile], inputs: list[dict[str, Any]],
                    results: dict[int, dict[str, Any]], expected_hash: str) -> dict[str, Any]:
    text = TextStats()
    replaced_by_file: dict[str, int] = {}
    long_split = 0
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        splits[split] = {"instances": 0, "tokens": 0, "documents": 0, "shards": []}
        if config.mode != "mlm":
            splits[split]["label_1"] = 0
        if config.static_masks:
            splits[split]["predictions"] = 0
    for index in sorted(results):
        result = results[index]
        info = result["chunk"]
        text.add(TextStats(**info["text"]))
        long_split += info.get("long_sentences_split", 0)
        for path, count in info.get("replaced_by_file", {}).items():
            replaced_by_file[path] = replaced_by_file.get(path, 0) + count
        for split in SPLITS:
            counts = result["splits"][split]
            summary = splits[split]
            for key in ("instances", "tokens", "documents", "label_1", "predictions"):
                if key in summary:
                    summary[key] += counts.get(key, 0)
            summary["shards"].append({"file": f"{split}/{shard_name(index)}", "instances": counts["instances"],
                                      "tokens": counts["tokens"]})
    masking = config.masking
    special_ids = {"pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id, "cls": tokenizer.cls_token_id,
                   "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_by": f"bertforge {__version__}",
        "settings_hash": expected_hash,
        "mode": config.mode,
        "max_seq_length": config.max_seq_length,
        "masking": "static" if config.static_masks else "dynamic",
        "whole_word_mask": config.whole_word_mask,
        "max_predictions_per_seq": masking.max_predictions(config.max_seq_length),
        "vocab": {"file": "vocab.txt", "hash": tokenizer.vocab_hash, "size": tokenizer.vocab_size,
                  "lowercase": tokenizer.lowercase, "special_ids": special_ids},
        "token_dtype": token_dtype(tokenizer.vocab_size).name,
        "settings": config.settings(),
        "inputs": inputs,
        "counts": {
            "files": len(files),
            "bytes": text.bytes,
            "documents": text.documents,
            "sentences": text.sentences,
            "replaced_characters": text.replaced_characters,
            "title_lines": text.title_lines,
            "split_lines": text.split_lines,
            "long_sentences_split": long_split,
            "instances": {split: splits[split]["instances"] for split in SPLITS},
            "tokens": {split: splits[split]["tokens"] for split in SPLITS},
        },
        "replaced_by_file": replaced_by_file,
        "splits": splits,
    }


def format_summary(manifest: dict[str, Any], seconds: float) -> str:
    counts = manifest["counts"]
    megabytes = counts["bytes"] / 1e6
    lines = [f"prepared {megabytes:,.2f} MB in {seconds:,.1f} s ({megabytes / max(seconds, 1e-9):,.2f} MB/s, "
             f"{sum(counts['instances'].values()) / max(seconds, 1e-9):,.0f} instances/s): "
             f"{counts['documents']:,} documents, {counts['sentences']:,} sentences, mode {manifest['mode']}"]
    for split in SPLITS:
        summary = manifest["splits"][split]
        line = (f"  {split:5s} {summary['instances']:>10,} instances  {summary['tokens']:>12,} tokens  "
                f"{len(summary['shards'])} shards")
        if "label_1" in summary and summary["instances"]:
            name = "random next" if manifest["mode"] == "nsp" else "swapped"
            line += f"  ({100 * summary['label_1'] / summary['instances']:.1f}% {name})"
        lines.append(line)
    if counts["replaced_characters"]:
        lines.append(f"  replaced invalid UTF-8: {counts['replaced_characters']:,} "
                     f"in {len(manifest['replaced_by_file'])} file(s)")
    return "\n".join(lines)


__all__ = ["PrepareConfig", "PrepareSettings", "prepare_corpus", "format_summary", "load_tokenizer"]
