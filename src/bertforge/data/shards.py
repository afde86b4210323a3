"""Shard files: named numpy arrays in one memory-mappable file, written atomically.

Layout of a shard (little-endian)::

    b"BFSHARD1"  uint64 header length  header (UTF-8 JSON)  padding  array  padding  array ...

The header names each array's dtype, shape and byte offset (each 64-byte aligned) and carries a
`meta` object (counts, the chunk digest and settings hash that make resuming safe). A reader maps
the file once and hands out zero-copy numpy views.

Arrays of a pretraining shard (n instances, t tokens):

    tokens            (t,)   uint16 (uint32 for vocabs over 65,536): [CLS] A [SEP] B [SEP] of
                             every instance, back to back (masked ids when masking is static)
    offsets           (n+1,) int64: instance i is tokens[offsets[i]:offsets[i+1]]
    segment_a_lengths (n,)   int32: tokens of type 0 ([CLS] A [SEP]); the rest are type 1
    labels            (n,)   uint8: NSP/SOP label (absent in mlm mode)
    word_starts       (t,)   uint8: 1 where a word begins (only with Chinese whole-word masking)
    mask_positions    (p,)   uint16, mask_offsets (n+1,) int64, mask_labels (p,) token dtype:
                             the fixed predictions (only with static masking)
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_open

FORMAT = "bertforge-pretraining-data"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAGIC = b"BFSHARD1"
ALIGNMENT = 64
SHARD_SUFFIX = ".bin"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}{SHARD_SUFFIX}"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def write_shard(path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> int:
    """Write `arrays` and `meta` to `path` atomically; returns the file size."""
    entries: dict[str, dict[str, Any]] = {}
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    # The header size depends on the offsets, which depend on the header size: lay out the
    # arrays after a generous fixed header allowance, then pad the header up to it.
    header_budget = 4096 + 256 * len(contiguous) + len(json.dumps(meta, ensure_ascii=False).encode()) * 2
    position = _align(len(MAGIC) + 8 + header_budget)
    for name, array in contiguous.items():
        entries[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": position}
        position = _align(position + array.nbytes)
    header = json.dumps({"arrays": entries, "meta": meta}, ensure_ascii=False).encode("utf-8")
    if len(header) > header_budget:
        raise AssertionError("shard header outgrew its allowance")  # a bug, not user input
    header = header + b" " * (header_budget - len(header))
    with atomic_open(path, "wb") as handle:
        handle.write(MAGIC)
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        written = len(MAGIC) + 8 + len(header)
        for name, array in contiguous.items():
            offset = entries[name]["offset"]
            handle.write(b"\0" * (offset - written))
            handle.write(memoryview(array).cast("B"))
            written = offset + array.nbytes
        handle.write(b"\0" * (position - written))
    return position


def _align(position: int) -> int:
    return (position + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a shard (without mapping its arrays)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(MAGIC) + 8)
            if len(start) < len(MAGIC) + 8 or start[:len(MAGIC)] != MAGIC:
                raise BertforgeError("not a bertforge shard (bad magic bytes)", path=path)
            (length,) = struct.unpack("<Q", start[len(MAGIC):])
            header = handle.read(length)
    except FileNotFoundError:
        raise BertforgeError("shard not found", path=path) from None
    try:
        return json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BertforgeError("shard header is corrupt", path=path) from None


class Shard:
    """A memory-mapped shard: `shard["tokens"]` is a read-only numpy view; `shard.meta` a dict."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header = read_header(self.path)
        self.meta: dict[str, Any] = header.get("meta", {})
        self._entries: dict[str, dict[str, Any]] = header["arrays"]
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._arrays: dict[str, np.ndarray] = {}
        for name, entry in self._entries.items():
            dtype = np.dtype(entry["dtype"])
            shape = tuple(entry["shape"])
            count = int(np.prod(shape)) if shape else 1
            end = entry["offset"] + count * dtype.itemsize
            if end > size:
                raise BertforgeError(f"shard is truncated (array {name!r} ends past the file)", path=self.path)
            if count == 0:
                self._arrays[name] = np.zeros(shape, dtype=dtype)
            else:
                self._arrays[name] = np.frombuffer(self._map, dtype=dtype, count=count,
                                                   offset=entry["offset"]).reshape(shape)

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def get(self, name: str) -> np.ndarray | None:
        return self._arrays.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._arrays)

    def close(self) -> None:
        self._arrays.clear()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # views still alive elsewhere; the map closes when they go
            self._map = None


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """A manifest.json as a dict, or None when it is absent or unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def prepared_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a prepared directory, or a BertforgeError naming what is missing."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.exists():
        raise BertforgeError("prepared data directory not found", path=directory)
    if not path.exists():
        raise BertforgeError("not a complete prepared data directory (no manifest.json); "
                             "run `bertforge data prepare`", path=directory)
    manifest = read_manifest(path)
    if manifest is None or manifest.get("format") != FORMAT:
        raise BertforgeError("manifest.json is not a bertforge pretraining-data manifest", path=path)
    if manifest.get("version") != FORMAT_VERSION:
        raise BertforgeError(f"data format version {manifest.get('version')} is not supported "
                             f"(this bertforge reads version {FORMAT_VERSION}); prepare the data again", path=path)
    return manifest
