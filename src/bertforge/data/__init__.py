"""Pretraining data: raw text to memory-mapped shards (`prepare_corpus`), and shards to masked,
padded batches for the trainer (`PretrainingDataset`, `PretrainingBatches`).

    manifest = prepare_corpus(PrepareConfig(inputs=["corpus/"], vocab="vocab.txt", out="data/"))
    dataset = PretrainingDataset("data/", split="train")
    batches = PretrainingBatches(dataset, batch_size=32, masking=MaskingConfig(), seed=0,
                                 rank=rank, world_size=world_size)

Modules: `documents` (reading and sentence splitting), `instances` (NSP, SOP and packed MLM
instances), `masking` (80/10/10 and whole-word masking, pure functions), `shards` (the file
format and manifest), `prepare` (the parallel, resumable pipeline), `loader` (dataset, order,
ranks, collation), `builtin` (the built-in corpus: Python's own documentation). The loader
imports torch; preparing data does not, so the names are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PrepareConfig": "bertforge.data.prepare",
    "PrepareSettings": "bertforge.data.prepare",
    "prepare_corpus": "bertforge.data.prepare",
    "MaskingConfig": "bertforge.data.masking",
    "PretrainingDataset": "bertforge.data.loader",
    "PretrainingBatches": "bertforge.data.loader",
    "PretrainingBatch": "bertforge.data.loader",
    "Instance": "bertforge.data.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bertforge.data' has no attribute {name!r}")
    return getattr(import_module(module), name)
