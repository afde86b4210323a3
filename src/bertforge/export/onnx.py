"""ONNX export of a model directory (the onnxruntime backend that runs the graph is
`bertforge.tasks.onnx_backend`, loaded through `bertforge.tasks.loading.load_model`).

Export traces the model's own forward (torch.onnx's TorchScript exporter, opset 17, no extra
packages) with dynamic batch and sequence axes. Inputs: input_ids, token_type_ids,
attention_mask, int64 (B, T). Outputs: the head's, as the task declares them
(`Task.onnx_outputs`: `logits`; `start_logits` and `end_logits`; `mlm_logits` for a masked-LM
model), and always `last_hidden_state` (B, T, H), for embeddings; onnxruntime computes only the
outputs a caller asks for, so serving logits costs nothing more.

Where the graph departs from the PyTorch model, without changing the numbers:
- the encoder runs its padded path (`set_fast_paths(model, False)`): the unpadded fast path
  gathers a data-dependent number of tokens, which a traced graph cannot hold;
- the example batch has a padded row, so the traced graph always applies the attention mask
  (a mask of ones gives what no mask gives).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertforge.config import BertConfig
from bertforge.fileio import commit_file, prepare_output, temporary_path_for
from bertforge.tasks.loading import LoadedModel, load_model
from bertforge.tasks.onnx_backend import (DEFAULT_FILE, HIDDEN_OUTPUT, INPUT_NAMES, METADATA_KEY,
                                          require_onnxruntime)

OPSET = 17


class _Traced(nn.Module):
    """The model's forward with a tuple of named outputs, as the tracer needs."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.model = loaded.model
        self.head_outputs = loaded.head_outputs

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.head_outputs:  # a bare encoder
            return (self.model(input_ids, token_type_ids, attention_mask).last_hidden_state,)
        output = self.model(input_ids, token_type_ids, attention_mask, output_hidden_states=True)
        return (*(getattr(output, name) for name in self.head_outputs), output.hidden_states[-1])  # last: (B, T, H)


@dataclass
class ExportReport:
    path: Path
    kind: str
    outputs: list[str]
    bytes: int
    max_abs_diff: float
    """Largest |onnxruntime - PyTorch| over the outputs on the example batch (nan when unchecked)."""


def example_batch(config: BertConfig, batch: int = 2, length: int = 11) -> dict[str, torch.Tensor]:
    """Random ids (B, T) whose last row is padded, so the traced graph keeps the mask."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[-1, length // 2:] = 0
    input_ids[attention_mask == 0] = config.pad_token_id
    token_type_ids = torch.zeros(batch, length, dtype=torch.long)
    token_type_ids[:, length // 3:] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids * attention_mask,
            "attention_mask": attention_mask}


def export_onnx(model_dir: str | Path, out_file: str | Path | None = None, *, opset: int = OPSET,
                check: bool = True, overwrite: bool = False) -> ExportReport:
    """Export `model_dir` to `out_file` (default MODEL_DIR/model.onnx), written atomically; an
    existing file there is replaced only with `overwrite`."""
    import torch.onnx

    model_dir = Path(model_dir)
    out_file = Path(out_file) if out_file is not None else model_dir / DEFAULT_FILE
    prepare_output(out_file, kind="file", overwrite=overwrite)
    from bertforge.model.bert import set_fast_paths

    loaded = load_model(model_dir, device="cpu")
    set_fast_paths(loaded.model, False)  # the padded path: see the module docstring
    traced = _Traced(loaded).eval()
    outputs = [*loaded.head_outputs, HIDDEN_OUTPUT]
    batch = example_batch(loaded.config)
    args = tuple(batch[name] for name in INPUT_NAMES)
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    for name in outputs:
        dynamic_axes[name] = {0: "batch", 1: "sequence"}
    temporary = temporary_path_for(out_file)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns about the mask branch it records (see the module docstring) and
            # that the TorchScript exporter is deprecated in favour of one needing onnxscript.
            warnings.simplefilter("ignore")
            torch.onnx.export(traced, args, str(temporary), dynamo=False, input_names=list(INPUT_NAMES),
                              output_names=outputs, dynamic_axes=dynamic_axes, opset_version=opset,
                              do_constant_folding=True)
        _write_metadata(temporary, {"kind": loaded.kind, "outputs": outputs,
                                    "architecture": getattr(loaded.model, "architecture", "BertModel")})
        max_abs_diff = float("nan")
        if check:
            max_abs_diff = _compare(temporary, traced, batch, outputs)
        commit_file(temporary, out_file)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return ExportReport(out_file, loaded.kind, outputs, out_file.stat().st_size, max_abs_diff)


def _write_metadata(path: Path, record: dict[str, Any]) -> None:
    import onnx

    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(record)
    onnx.save(graph, str(path))


def _compare(path: Path, traced: nn.Module, batch: dict[str, torch.Tensor], outputs: list[str]) -> float:
    onnxruntime = require_onnxruntime()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: batch[name].numpy() for name in INPUT_NAMES}
    got = session.run(outputs, feeds)
    with torch.no_grad():
        expected = traced(*(batch[name] for name in INPUT_NAMES))
    real = batch["attention_mask"].bool().numpy()
    worst = 0.0
    for ours, theirs in zip(got, expected):
        difference = np.abs(ours - theirs.numpy())
        # Padded positions carry values no one reads (and the unpadded path zeroes them).
        if difference.ndim >= 2 and difference.shape[:2] == real.shape:
            difference = difference[real]
        worst = max(worst, float(difference.max()))
    return worst
