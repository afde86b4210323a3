"""The shard file format: round trip, alignment, zero-copy reads, damage detection."""

from __future__ import annotations

import numpy as np
import pytest

from bertforge.data.shards import ALIGNMENT, Shard, read_header, token_dtype, write_shard
from bertforge.errors import BertforgeError


def test_round_trip_memory_mapped(tmp_path):
    arrays = {"tokens": np.arange(1000, dtype=np.uint16), "offsets": np.array([0, 10, 1000], dtype=np.int64),
              "labels": np.array([0, 1], dtype=np.uint8), "empty": np.zeros(0, dtype=np.int32),
              "matrix": np.arange(12, dtype=np.float32).reshape(3, 4)}
    meta = {"split": "train", "counts": {"instances": 2}, "name": "红楼梦"}
    path = tmp_path / "s.bin"
    size = write_shard(path, arrays, meta)
    assert path.stat().st_size == size
    assert [entry.name for entry in tmp_path.iterdir()] == ["s.bin"]  # no temporary left behind
    shard = Shard(path)
    assert shard.meta == meta
    assert shard.names == list(arrays)
    for name, array in arrays.items():
        assert shard[name].dtype == array.dtype and np.array_equal(shard[name], array)
    assert not shard["tokens"].flags.writeable
    for entry in read_header(path)["arrays"].values():
        assert entry["offset"] % ALIGNMENT == 0
    shard.close()


def test_same_content_same_bytes(tmp_path):
    arrays = {"tokens": np.arange(50, dtype=np.uint32)}
    write_shard(tmp_path / "a.bin", arrays, {"x": 1})
    write_shard(tmp_path / "b.bin", arrays, {"x": 1})
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


def test_damaged_shards_are_reported(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, {"tokens": np.arange(10_000, dtype=np.uint16)}, {})
    data = path.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:len(data) // 2])
    with pytest.raises(BertforgeError, match="truncated"):
        Shard(tmp_path / "cut.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a shard at all")
    with pytest.raises(BertforgeError, match="magic"):
        Shard(tmp_path / "junk.bin")


def test_token_dtype_fits_the_vocab():
    assert token_dtype(30522) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(250_002) == np.uint32
