"""ONNX export of a model directory, and the onnxruntime backend of `predict` and `serve`.

Export traces the model's own forward (torch.onnx's TorchScript exporter, opset 17, no extra
packages) with dynamic batch and sequence axes. Inputs: input_ids, token_type_ids,
attention_mask, int64 (B, T). Outputs: the head's (`logits`; `start_logits` and `end_logits`;
`mlm_logits` for a masked-LM model) and always `last_hidden_state` (B, T, H), for embeddings;
onnxruntime computes only the outputs a caller asks for, so serving logits costs nothing more.

Where the graph departs from the PyTorch model, without changing the numbers:
- the encoder runs its padded path (`set_fast_paths(model, False)`): the unpadded fast path
  gathers a data-dependent number of tokens, which a traced graph cannot hold;
- the example batch has a padded row, so the traced graph always applies the attention mask
  (a mask of ones gives what no mask gives).

`OnnxModel` wraps an onnxruntime session as a `torch.nn.Module` that returns the same typed
outputs as the task heads, so `Task.predict` and `Task.evaluate` (tokenization, windows,
postprocessing) run unchanged on onnxruntime.
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
from bertforge.errors import BertforgeError
from bertforge.export.models import Kind, LoadedModel, kind_of, load_model, read_config
from bertforge.fileio import commit_file, temporary_path_for

OPSET = 17
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
HEAD_OUTPUTS: dict[str, tuple[str, ...]] = {
    "classify": ("logits",),
    "ner": ("logits",),
    "qa": ("start_logits", "end_logits"),
    "masked_lm": ("mlm_logits",),
    "encoder": (),
}
DEFAULT_FILE = "model.onnx"
METADATA_KEY = "bertforge"
"""ONNX metadata_props key holding {"kind", "outputs", "architecture"} as JSON."""


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BertforgeError("the ONNX backend needs onnxruntime: pip install 'bertforge[onnx]' "
                             "(or pip install onnx onnxruntime)") from None
    return onnxruntime


class _Traced(nn.Module):
    """The model's forward with a tuple of named outputs, as the tracer needs."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.model = loaded.model
        self.kind = loaded.kind

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.kind == "encoder":
            return (self.model(input_ids, token_type_ids, attention_mask).last_hidden_state,)
        output = self.model(input_ids, token_type_ids, attention_mask, output_hidden_states=True)
        last = output.hidden_states[-1]  # (B, T, H)
        if self.kind == "qa":
            return output.start_logits, output.end_logits, last
        if self.kind == "masked_lm":
            return output.mlm_logits, last
        return output.logits, last


@dataclass
class ExportReport:
    path: Path
    kind: Kind
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
                check: bool = True) -> ExportReport:
    """Export `model_dir` to `out_file` (default MODEL_DIR/model.onnx), written atomically."""
    import torch.onnx

    model_dir = Path(model_dir)
    out_file = Path(out_file) if out_file is not None else model_dir / DEFAULT_FILE
    if out_file.exists() and out_file.is_dir():
        raise BertforgeError("the output is a directory; give a file name such as model.onnx", path=out_file)
    from bertforge.model.bert import set_fast_paths

    loaded = load_model(model_dir, device="cpu")
    set_fast_paths(loaded.model, False)  # the padded path: see the module docstring
    traced = _Traced(loaded).eval()
    outputs = [*HEAD_OUTPUTS[loaded.kind], "last_hidden_state"]
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


def read_metadata(session: Any) -> dict[str, Any]:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


@dataclass
class _Output:
    """Stands in for ClassifierOutput / SpanOutput / PreTrainingOutput / EncoderOutput."""

    loss: None = None
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class OnnxModel(nn.Module):
    """An onnxruntime session behind the interface of the PyTorch model it was exported from.

    `forward(input_ids, token_type_ids, attention_mask)` returns an object with the head's
    fields (`logits`, or `start_logits`/`end_logits`, or `mlm_logits`); `encode(...)` returns the
    last hidden state. The module has one empty parameter so that code asking for the model's
    device (CPU) finds one.
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
        self.kind: Kind = self.metadata.get("kind", kind_of(config))
        self.output_names = [output.name for output in self.session.get_outputs()]
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
                attention_mask: torch.Tensor | None = None, **unused: Any) -> _Output:
        names = list(HEAD_OUTPUTS[self.kind])
        if not names:
            raise BertforgeError(f"this ONNX model ({self.kind}) has no task head", path=self.path)
        return _Output(**dict(zip(names, self._run(names, input_ids, token_type_ids, attention_mask))))

    def encode(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden state (B, T, H)."""
        return self._run(["last_hidden_state"], input_ids, token_type_ids, attention_mask)[0]


def onnx_path(model_dir: Path, onnx_file: Path | None) -> Path:
    path = onnx_file if onnx_file is not None else Path(model_dir) / DEFAULT_FILE
    if not path.is_file():
        raise BertforgeError(f"no ONNX model; run `bertforge export onnx --model {model_dir} --out {path}` first",
                             path=path)
    return path


def load_onnx(model_dir: str | Path, onnx_file: str | Path | None = None, task_name: str | None = None,
              settings: Any = None, threads: int | None = None) -> LoadedModel:
    """A model directory (config, tokenizer, task settings) with its ONNX graph as the model."""
    from bertforge.tasks import get_task
    from bertforge.tasks.common import TaskSettings
    from bertforge.tasks.finetune import load_tokenizer, merge_settings, saved_settings, task_of

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    model = OnnxModel(onnx_path(model_dir, None if onnx_file is None else Path(onnx_file)), config, threads)
    tokenizer = load_tokenizer(model_dir)
    kind = model.kind
    if kind in ("classify", "ner", "qa"):
        task = task_of(model_dir, config, task_name or kind)
        _, saved = saved_settings(config)
        merged = merge_settings(settings or TaskSettings(), saved)
        return LoadedModel(model_dir, kind, model, config, tokenizer, task, merged)
    if task_name is not None:
        get_task(task_name)  # unknown names raise; known ones disagree with the model
        raise BertforgeError(f"this ONNX model is a {kind} model, not a {task_name!r} model", path=model.path)
    return LoadedModel(model_dir, kind, model, config, tokenizer)


def predict_onnx(*, model_dir: Path, task_name: str | None, settings: Any, texts: list[str] | None = None,
                 input_path: Path | None = None, context: str | None = None, text_pair: str | None = None,
                 batch_size: int = 64, onnx_file: Path | None = None) -> list[dict[str, Any]]:
    """`bertforge predict --backend onnx`: as `bertforge.tasks.finetune.predict`, on onnxruntime."""
    loaded = load_onnx(model_dir, onnx_file, task_name, settings)
    if loaded.task is None or loaded.settings is None:
        raise BertforgeError("predict needs a fine-tuned task model (classify, ner or qa)", path=model_dir)
    task, settings = loaded.task, loaded.settings
    if input_path is not None:
        if texts:
            raise BertforgeError("pass either texts or --input FILE, not both")
        inputs = task.read_inputs(input_path, settings)
    elif texts:
        inputs = task.inputs_from_texts(texts, settings, context if task.name == "qa" else text_pair)
    else:
        raise BertforgeError("nothing to predict: pass texts or --input FILE")
    return task.predict(loaded.model, loaded.tokenizer, inputs, settings, batch_size)
