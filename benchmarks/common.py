"""Shared pieces of the speed benchmarks: the machine, the matmul peak, BERT's FLOPs, real-text
batches, alternated timing and peak memory.

Conventions used by every benchmark here:
- both sides (bertforge and transformers) run in one process on the same weights, config,
  batches and precision; after a warm-up, repetitions alternate A B, B A, A B, ... so that
  load from other processes hits both sides alike, and the medians are reported;
- model FLOPs count what BERT needs for the batch: the encoder on the real (non-padding)
  tokens, attention within each sequence, the masked-LM head on the masked positions only (as
  google-research/bert computes it), pooler and NSP/classifier, and for a classifier the last
  layer at [CLS] only (plus its keys and values everywhere); training is 3x the forward.
  A side that computes on padding or predicts every position does more work than this, so
  MFU = model FLOPs / time / peak compares the sides exactly as their throughputs do;
- the peak is the median FLOP/s of a large square matmul (4096^2 on CPU, 8192^2 on CUDA) in
  the same dtype on the same device, sampled by the same script before and between the timed
  repetitions, so that it sees the same load from other processes as the steps do;
- peak memory: on CUDA, torch.cuda.max_memory_allocated during a side's steps; on CPU, the
  peak resident set size (sampled from /proc/self/statm every 2 ms) above the resident
  size just before the step, after returning freed heap memory to the OS (malloc_trim): the
  memory a step needs on top of the weights and optimizer state, which both sides hold.
"""

from __future__ import annotations

import csv
import ctypes
import os
import platform
import re
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bertforge.config import IGNORE_INDEX, BertConfig

DATA_DIR = Path(os.environ.get("BERTFORGE_DATA", "/work/shared/data"))
VOCAB = "vocab/bert-base-uncased-vocab.txt"
GUTENBERG = ["austen-emma.txt", "melville-moby_dick.txt", "chesterton-thursday.txt", "austen-sense.txt",
             "milton-paradise.txt", "chesterton-brown.txt"]


# -- the machine --------------------------------------------------------------------------------


def machine_description(device: torch.device) -> str:
    """CPU model, cores, threads, torch/transformers versions, load average (and the GPU)."""
    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"Model name:\s*(.+)", lscpu)
        model = found.group(1).strip() if found else model
        flags = re.search(r"Flags:\s*(.+)", lscpu)
        extras = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if flags and f in flags.group(1).split()]
        if extras:
            model += f" ({', '.join(extras)})"
    except OSError:
        pass
    import transformers

    text = (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, transformers {transformers.__version__}")
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class MatmulPeak:
    """FLOP/s of a large square matmul in the benchmark's dtype, sampled throughout a run.

    `sample()` runs one matmul and records its rate; the peak is the median of the samples,
    taken between the timed repetitions so that it sees the same machine load as they do.
    """

    def __init__(self, device: torch.device, precision: str, size: int | None = None):
        self.device = device
        self.size = size or (8192 if device.type == "cuda" else 4096)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        generator = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(self.size, self.size, generator=generator).to(device=device, dtype=dtype)
        self.b = torch.randn(self.size, self.size, generator=generator).to(device=device, dtype=dtype)
        self.samples: list[float] = []
        for _ in range(2):  # warm-up: oneDNN/cuBLAS kernel selection, page faults
            self.a @ self.b
        for _ in range(3):
            self.sample()

    def sample(self) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        self.a @ self.b
        synchronize(self.device)
        self.samples.append(2 * self.size**3 / (time.perf_counter() - start))

    @property
    def flops(self) -> float:
        return statistics.median(self.samples)


# -- FLOPs ------------------------------------------------------------------------------------


def forward_flops(config: BertConfig, lengths: list[int], num_masked: int = 0, heads: str = "pretraining",
                  num_labels: int = 2) -> float:
    """Model FLOPs of one forward pass; `lengths` are the real lengths of the sequences.

    heads: "pretraining" (MLM at num_masked positions + pooler + NSP), "mlm", "classifier".
    """
    hidden, inter, layers, vocab = (config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                                    config.vocab_size)
    tokens = sum(lengths)
    # A classifier reads only [CLS] of the last layer, so that layer needs its keys and values at
    # every token but its query, output projection, FFN and attention row at [CLS] alone.
    full_layers = layers - 1 if heads == "classifier" else layers
    flops = 2.0 * tokens * full_layers * (4 * hidden * hidden + 2 * hidden * inter)  # projections + FFN
    flops += 2.0 * 2 * full_layers * hidden * sum(n * n for n in lengths)  # QK^T and PV in each sequence
    if heads == "classifier":
        flops += 2.0 * tokens * 2 * hidden * hidden  # last layer: K and V at every token
        flops += 2.0 * len(lengths) * (2 * hidden * hidden + 2 * hidden * inter)  # Q, output, FFN at [CLS]
        flops += 2.0 * 2 * hidden * tokens  # QK^T and PV for the [CLS] query
    if heads in ("pretraining", "mlm"):
        flops += 2.0 * num_masked * (hidden * hidden + hidden * vocab)
    if heads in ("pretraining", "classifier"):
        outputs = 2 if heads == "pretraining" else num_labels
        flops += 2.0 * len(lengths) * (hidden * hidden + hidden * outputs)
    return flops


# -- transformers side ------------------------------------------------------------------------


def hf_config(config: BertConfig, attn_implementation: str = "sdpa"):
    import transformers

    values = {k: v for k, v in config.to_dict().items() if k != "bertforge"}
    hf = transformers.BertConfig(**values)
    hf._attn_implementation = attn_implementation
    return hf


def copy_weights_to_hf(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Load our weights into the transformers model; every tensor of theirs must be covered."""
    from bertforge.convert import to_hf_state_dict

    state = to_hf_state_dict(ours)
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    missing = [k for k in missing if not re.search(r"position_ids|token_type_ids|decoder\.(weight|bias)", k)]
    if missing or unexpected:
        raise RuntimeError(f"weight copy to transformers failed: missing {missing}, unexpected {unexpected}")
    theirs.tie_weights()


# -- data -------------------------------------------------------------------------------------


def tokenizer():
    from bertforge.tokenizer import BertTokenizer

    return BertTokenizer(DATA_DIR / VOCAB, lowercase=True)


def _documents(tok, max_chars_per_book: int) -> list[list[list[int]]]:
    """Gutenberg books as documents of tokenized sentences (paragraphs split at . ! ?)."""
    documents = []
    for name in GUTENBERG:
        path = DATA_DIR / "corpora" / "gutenberg" / name
        text = path.read_text(encoding="utf-8", errors="replace")[:max_chars_per_book]
        paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
        sentences = [s for p in paragraphs if p for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", p) if s]
        ids = [s for s in tok.encode_batch_ids(sentences) if s]
        documents.append(ids)
    return documents


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]


def nsp_instances(documents: list[list[list[int]]], max_seq_len: int, count: int, rng: np.random.Generator,
                  short_seq_prob: float = 0.1) -> list[tuple[list[int], list[int], int]]:
    """google-research/bert's create_instances_from_document: (tokens_a, tokens_b, is_random_next).

    Departure: the short target length is drawn per instance rather than once per document,
    because a Gutenberg book is one very long document.
    """
    max_tokens = max_seq_len - 3
    out: list[tuple[list[int], list[int], int]] = []
    while len(out) < count:
        for doc_index, document in enumerate(documents):
            target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
            chunk: list[list[int]] = []
            length = 0
            i = int(rng.integers(0, max(1, len(document) - 50)))  # a random place in the book
            while i < len(document) and len(out) < count:
                chunk.append(document[i])
                length += len(document[i])
                if i == len(document) - 1 or length >= target:
                    a_end = 1 if len(chunk) < 2 else int(rng.integers(1, len(chunk)))
                    tokens_a = [t for s in chunk[:a_end] for t in s]
                    is_random = len(chunk) == 1 or rng.random() < 0.5
                    if is_random:
                        other = documents[(doc_index + int(rng.integers(1, len(documents)))) % len(documents)]
                        start = int(rng.integers(0, len(other)))
                        tokens_b: list[int] = []
                        for sentence in other[start:]:
                            tokens_b.extend(sentence)
                            if len(tokens_b) >= target - len(tokens_a):
                                break
                        i -= len(chunk) - a_end  # the unused sentences start the next instance
                    else:
                        tokens_b = [t for s in chunk[a_end:] for t in s]
                    _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                    if tokens_a and tokens_b:
                        out.append((tokens_a, tokens_b, int(is_random)))
                    chunk, length = [], 0
                    target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
                    if len(out) % 8 == 0:
                        break  # move on to the next book now and then, for variety
                i += 1
            if len(out) >= count:
                break
    return out


def pretraining_batches(seq_len: int, batch_size: int, num_batches: int, seed: int = 0,
                        mask_prob: float = 0.15) -> list[dict[str, torch.Tensor]]:
    """NSP pairs from Gutenberg, padded to seq_len, with BERT's 80/10/10 masking of 15%."""
    tok = tokenizer()
    rng = np.random.default_rng(seed)
    documents = _documents(tok, max_chars_per_book=400_000)
    instances = nsp_instances(documents, seq_len, batch_size * num_batches, rng)
    special = set(tok.all_special_ids)
    max_predictions = max(1, round(mask_prob * seq_len))
    batches = []
    for start in range(0, len(instances), batch_size):
        rows = instances[start:start + batch_size]
        input_ids = np.full((len(rows), seq_len), tok.pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros_like(input_ids)
        attention_mask = np.zeros_like(input_ids)
        labels = np.full_like(input_ids, IGNORE_INDEX)
        for row, (a, b, _) in enumerate(rows):
            ids = [tok.cls_token_id, *a, tok.sep_token_id, *b, tok.sep_token_id]
            input_ids[row, :len(ids)] = ids
            token_type_ids[row, len(a) + 2:len(ids)] = 1
            attention_mask[row, :len(ids)] = 1
            candidates = [i for i, t in enumerate(ids) if t not in special]
            count = min(max_predictions, max(1, round(len(candidates) * mask_prob)))
            for position in rng.permutation(candidates)[:count]:
                labels[row, position] = ids[position]
                draw = rng.random()
                if draw < 0.8:
                    input_ids[row, position] = tok.mask_token_id
                elif draw < 0.9:
                    input_ids[row, position] = int(rng.integers(999, tok.vocab_size))  # past [unused]/specials
        batches.append(dict(input_ids=torch.from_numpy(input_ids), token_type_ids=torch.from_numpy(token_type_ids),
                            attention_mask=torch.from_numpy(attention_mask), labels=torch.from_numpy(labels),
                            next_sentence_label=torch.tensor([r[2] for r in rows])))
    return batches


def sst2_batches(batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """SST-2 dev in file order, batch_size sentences a batch, each padded to its own longest."""
    tok = tokenizer()
    with (DATA_DIR / "glue" / "sst2" / "dev.tsv").open(encoding="utf-8", newline="") as handle:
        sentences = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    batches = []
    for start in range(0, len(sentences), batch_size):
        encoded = tok(sentences[start:start + batch_size], padding=True, truncation=True, max_length=128,
                      return_tensors="pt")
        batches.append({k: encoded[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
    return batches


def real_lengths(batch: dict[str, torch.Tensor]) -> list[int]:
    return [int(n) for n in batch["attention_mask"].sum(1)]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# -- timing and memory --------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of the code run inside `with`: bytes above the level at entry."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        _malloc_trim()
        self.base = _rss_bytes()
        self.peak_rss = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.002):
            self.peak_rss = max(self.peak_rss, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
            return
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak_rss, _rss_bytes()) - self.base


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * _PAGE


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class SideResult:
    times: list[float]
    extra: dict[str, list[float]]
    peak_memory: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def alternate(sides: dict[str, Callable[[int], dict[str, float] | None]], device: torch.device, warmup: int,
              reps: int, measure_memory: bool = True, log: Callable[[str], None] | None = None,
              between: Callable[[], None] | None = None) -> dict[str, SideResult]:
    """Warm each side up, then time `reps` calls of each, alternating which side goes first.

    A side is a function of the repetition index (so both get the same batch at rep i); it may
    return named sub-timings (e.g. the optimizer step) that are collected alongside. `between`
    runs after each round of sides, untimed (the matmul peak sampler). Peak memory comes from
    one more, untimed call per side: the sampling thread would otherwise take CPU from the
    timed calls.
    """
    names = list(sides)
    for name in names:
        for index in range(warmup):
            sides[name](index)
        synchronize(device)
    results = {name: SideResult([], {}, 0) for name in names}
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            extra = sides[name](warmup + rep)
            synchronize(device)
            elapsed = time.perf_counter() - start
            result = results[name]
            result.times.append(elapsed)
            for key, value in (extra or {}).items():
                result.extra.setdefault(key, []).append(value)
            if log:
                log(f"  rep {rep} {name}: {elapsed:.3f}s")
        if between is not None:
            between()
    if measure_memory:
        for name in names:
            synchronize(device)
            with PeakMemory(device) as memory:
                sides[name](warmup)
                synchronize(device)
            results[name].peak_memory = memory.peak
    return results


def mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.0f}"
