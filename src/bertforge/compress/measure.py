"""Measuring what compression buys: sentences per second, parameters and bytes on disk.

`sentences_per_second` is the inference harness of `benchmarks/inference_throughput.py` in
the library (the library does not import the benchmarks): the sentences in their order,
`batch_size` to a batch, each batch padded to its own longest sentence (dynamic padding); one
untimed warm-up pass, then `rounds` timed passes over all batches; inside a pass the models
alternate batch by batch (A B C on one batch, C B A on the next), so load from other processes
falls on every model alike. Each model's time is the median of its passes; a forward ends when
the predicted labels reach the host. PyTorch models run under `torch.inference_mode`, eager,
with bertforge's fast paths (as `bertforge evaluate` runs them); onnxruntime models as the
onnx backend runs them.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

Batch = dict[str, torch.Tensor]


def timing_batches(tokenizer: Any, texts: list[str], pairs: list[str] | None, batch_size: int,
                   max_length: int) -> list[Batch]:
    """`texts` (and `pairs`) in order, `batch_size` to a batch, each padded to its own longest."""
    batches = []
    for start in range(0, len(texts), batch_size):
        second = None if pairs is None else pairs[start:start + batch_size]
        encoded = tokenizer(texts[start:start + batch_size], second, padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        batches.append({name: encoded[name] for name in ("input_ids", "token_type_ids", "attention_mask")})
    return batches


def forward_of(model: Any) -> Callable[[Batch], Any]:
    """One timed call: the model's logits on a batch, argmax, to the host as a list."""
    def forward(batch: Batch) -> Any:
        with torch.inference_mode():
            output = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
            return output.logits.argmax(-1).tolist()
    return forward


def sentences_per_second(sides: dict[str, Callable[[Batch], Any]], batches: list[Batch],
                         rounds: int = 3) -> dict[str, dict[str, Any]]:
    """{name: {sentences_per_s, median_s, times}} for each side (see the module docstring)."""
    names = list(sides)
    for batch in batches:  # warm-up: caches, allocator, onnxruntime's first runs
        for name in names:
            sides[name](batch)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        totals = dict.fromkeys(names, 0.0)
        for index, batch in enumerate(batches):
            for name in (names if index % 2 == 0 else names[::-1]):
                started = time.perf_counter()
                sides[name](batch)
                totals[name] += time.perf_counter() - started
        for name in names:
            times[name].append(totals[name])
        names = names[1:] + names[:1]  # who goes first rotates between passes too
    sentences = sum(int(batch["input_ids"].shape[0]) for batch in batches)
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"sentences_per_s": sentences / median, "median_s": median,
                         "times": [round(value, 4) for value in values]}
    return results


def directory_bytes(directory: Path) -> int:
    """Bytes of every file under `directory` (what the whole directory takes on disk)."""
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


def parameter_count(directory: Path) -> int:
    """Parameters of a model directory, counted from its safetensors headers (an int8
    directory's are those of the fp32 weights its graph was quantized from: the same count)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                if not name.endswith("position_ids"):  # a buffer some transformers versions save
                    total += math.prod(handle.get_slice(name).get_shape())
    return total


def weights_bytes(directory: Path, backend: str) -> int:
    """Bytes of the weights the backend runs: model.onnx (onnx); the safetensors (torch), or for
    a directory that runs as torch dynamic int8, the int8 size its quantization record states."""
    directory = Path(directory)
    if backend == "onnx":
        return (directory / "model.onnx").stat().st_size
    record = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("quantization")
    if isinstance(record, dict) and record.get("int8_bytes"):
        return int(record["int8_bytes"])
    return sum(path.stat().st_size for path in directory.glob("*.safetensors"))
