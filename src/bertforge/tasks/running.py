"""Running a model over features for evaluation and prediction (no labels, no grad)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from bertforge.tasks.features import Collate, batch_order, collate_packed

if TYPE_CHECKING:
    import torch


def model_device(model: "torch.nn.Module") -> "torch.device":
    return next(model.parameters()).device


def run_model(model: "torch.nn.Module", features: Any, pad_token_id: int, batch_size: int,
              collect: Callable[[Any, dict[str, "torch.Tensor"]], dict[str, "torch.Tensor"]],
              autocast_dtype: "torch.dtype | None" = None,
              collate: Collate = collate_packed) -> dict[str, list[np.ndarray]]:
    """Run `model` over every feature (no labels, no grad); `collect(output, batch)` picks the
    (B, ...) tensors to keep. Returns, per collected name, one float32 array per feature in
    feature order, each cut to the feature's own length when the tensor has a T axis.

    `features` is any object with `__len__` and `lengths` that `collate` gathers batches from;
    the model gets the batch's input_ids, token_type_ids and attention_mask."""
    import torch

    device = model_device(model)
    was_training = model.training
    model.eval()
    results: dict[str, list[np.ndarray | None]] = {}
    try:
        with torch.inference_mode():
            for indices in batch_order(features.lengths, batch_size, None):
                batch = collate(features, indices, pad_token_id)
                inputs = {name: batch[name].to(device) for name in ("input_ids", "token_type_ids", "attention_mask")}
                # Without a dtype, any autocast the caller set (the trainer's bf16) stays in force.
                precision = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                             else contextlib.nullcontext())
                with precision:
                    output = model(**inputs)
                width = inputs["input_ids"].shape[1]
                for name, tensor in collect(output, batch).items():
                    values = tensor.float().cpu().numpy()
                    store = results.setdefault(name, [None] * len(features))
                    timed = values.ndim >= 2 and values.shape[1] == width
                    for row, index in enumerate(indices):
                        store[index] = values[row, :features.lengths[index]] if timed else values[row]
    finally:
        model.train(was_training)
    return {name: list(values) for name, values in results.items()}  # type: ignore[misc]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exponent = np.exp(shifted)
    return exponent / exponent.sum(axis=axis, keepdims=True)
