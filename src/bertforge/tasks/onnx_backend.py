"""The onnxruntime backend: an ONNX graph (from `bertforge export onnx`) behind the interface of
the PyTorch model it was exported from, so `Task.predict` and `Task.evaluate` (tokenization,
windows, postprocessing) and the server run unchanged on onnxruntime.

The graph's inputs are input_ids, token_type_ids and attention_mask, int64 (B, T); its outputs
are the head's (named in the graph's `bertforge` metadata) and always `last_hidden_state`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from bertforge.config import BertConfig
from bertforge.errors import BertforgeError

DEFAULT_FILE = "model.onnx"
METADATA_KEY = "bertforge"
"""ONNX metadata_props key holding {"kind", "outputs", "architecture"} as JSON."""
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
HIDDEN_OUTPUT = "last_hidden_state"


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BertforgeError("the ONNX backend needs onnxruntime: pip install 'bertforge[onnx]' "
                             "(or pip install onnx onnxruntime)") from None
    return onnxruntime


def read_metadata(session: Any) -> dict[str, Any]:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def onnx_path(model_dir: Path, onnx_file: Path | None) -> Path:
    path = onnx_file if onnx_file is not None else Path(model_dir) / DEFAULT_FILE
    if not path.is_file():
        raise BertforgeError(f"no ONNX model; run `bertforge export onnx --model {model_dir} --out {path}` first",
                             path=path)
    return path


class OnnxModel(nn.Module):
    """An onnxruntime session behind the interface of the PyTorch model it was exported from.

    `forward(input_ids, token_type_ids, attention_mask)` returns an object with the head's
    output fields (`logits`, or `start_logits`/`end_logits`, or `mlm_logits`, as the graph's
    metadata lists them) and `loss=None`; `encode(...)` returns the last hidden state. The
    module has one empty parameter so that code asking for the model's device (CPU) finds one.
    """

    def __init__(self, path: str | Path, config: BertConfig, threads: int | None = None):
        super().__init__()
        onnxruntime = require_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise BertforgeError("ONNX file not found (export it with `bertforge export onnx`)", path=path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise BertforgeError(f"cannot load the ONNX model: {error}".splitlines()[0], path=path) from None
        self.path = path
        self.config = config
        self.metadata = read_metadata(self.session)
        self.output_names = [output.name for output in self.session.get_outputs()]
        if "kind" in self.metadata:
            self.kind: str = self.metadata["kind"]
        else:
            from bertforge.tasks.loading import kind_of

            self.kind = kind_of(config)
        self.head_outputs = [name for name in self.metadata.get("outputs", self.output_names) if name != HIDDEN_OUTPUT]
        self.architecture = self.metadata.get("architecture", "")
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def _run(self, names: list[str], input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
             attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feeds = {"input_ids": input_ids.cpu().numpy().astype(np.int64),
                 "token_type_ids": token_type_ids.cpu().numpy().astype(np.int64),
                 "attention_mask": attention_mask.cpu().numpy().astype(np.int64)}
        return [torch.from_numpy(np.ascontiguousarray(value)) for value in self.session.run(names, feeds)]

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **unused: Any) -> SimpleNamespace:
        if not self.head_outputs:
            raise BertforgeError(f"this ONNX model ({self.kind}) has no task head", path=self.path)
        values = self._run(self.head_outputs, input_ids, token_type_ids, attention_mask)
        return SimpleNamespace(loss=None, **dict(zip(self.head_outputs, values)))

    def encode(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden state (B, T, H)."""
        return self._run([HIDDEN_OUTPUT], input_ids, token_type_ids, attention_mask)[0]
