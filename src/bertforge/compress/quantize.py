"""Dynamic int8 quantization of a model directory's Linear layers: on PyTorch (`method="torch"`,
the default) or through onnxruntime (`method="onnx"`).

Both are dynamic quantization: every Linear weight (query/key/value, attention output, both
feed-forward matrices, pooler, heads) becomes int8, with one scale per output channel by
default (`per_channel`), and the activations are quantized on the fly at run time (no
calibration data). Embeddings, LayerNorms and the attention itself stay fp32.

- **torch** (`bertforge.model.int8`): the output directory holds the source's fp32 weights and a
  config.json whose `quantization` record says "torch dynamic int8"; the torch backend of
  `bertforge predict`, `evaluate` and `serve` quantizes the Linear layers as it loads them
  (deterministic, milliseconds). torch.ao's packed int8 modules have no safetensors form, so
  they are built at load time instead of being pickled. transformers loads the directory as the
  float model (its outputs are the fp32 source's, not the int8 ones).
- **onnx**: the model is exported to ONNX (`bertforge.export.onnx`) and onnxruntime's
  `quantize_dynamic` rewrites its MatMuls; the int8 graph is `model.onnx`, which `predict`,
  `evaluate` and `serve` run (their default backend, auto, picks onnx for such a directory;
  `bertforge.tasks.onnx_backend`). Beside it lie the fp32 weights it was quantized from
  (`model.safetensors`), so that transformers still loads the directory, as the float model.

Why torch is the default: on SST-2 dev with the fine-tuned all-MiniLM-L6-v2 (2-core Xeon with
AVX-512 and AMX, issue 17), torch's int8 (per channel, feed-forward outputs fp32) ran 1.39x
PyTorch's fp32 and lost 0.46 points, where onnxruntime's per-tensor int8 ran 0.80x and lost 1.6
(benchmarks/results/compress.md). Either way the directory
holds the fp32 weights too, so its size on disk is not the int8 size (`QuantizeReport.int8_bytes`
is).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bertforge.errors import BertforgeError
from bertforge.fileio import MODEL_FILES, atomic_write_text, prepare_output, replace_directory
from bertforge.tasks.loading import QUANTIZATION_KEY

TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


METHODS = ("torch", "onnx")


@dataclass
class QuantizeReport:
    out_dir: Path
    method: str
    fp32_bytes: int
    """Size of what was quantized in fp32: the ONNX graph (onnx), the weights (torch)."""
    int8_bytes: int
    """Size of the int8 form: the int8 graph (onnx); int8 Linear weights with their scales, and
    the rest in fp32 (torch, which builds it at load time)."""
    weights_bytes: int
    """Size of the source directory's weights (model.safetensors)."""
    quantized_nodes: int
    """Linear layers (torch) or MatMuls (onnx) made int8."""


def quantize_model(model_dir: str | Path, out_dir: str | Path, *, method: str = "torch", per_channel: bool = True,
                   fp32_ffn_output: bool = True, overwrite: bool = False) -> QuantizeReport:
    """Write the int8 model directory `out_dir` (atomically: complete or absent). An existing
    model there is replaced only with `overwrite`; `out_dir` is never `model_dir` nor holds it.
    `fp32_ffn_output` (torch only) keeps the feed-forward output projections fp32
    (`bertforge.model.int8.int8_linears`)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if method not in METHODS:
        raise BertforgeError(f"--method must be torch or onnx, got {method!r}")
    # The fp32 weights would be lost: the whole output directory is replaced.
    prepare_output(out_dir, kind="directory", finished=(*MODEL_FILES, "vocab.txt"), what="model",
                   overwrite=overwrite, inputs=[model_dir], whole=True)
    if not (model_dir / "config.json").exists():
        raise BertforgeError("no config.json: not a model directory", path=model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if QUANTIZATION_KEY in config:
        raise BertforgeError("already quantized (its config.json has a quantization record); quantize the fp32 "
                             "model it came from", path=model_dir)
    if method == "onnx":
        from bertforge.tasks.onnx_backend import require_onnxruntime

        require_onnxruntime()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name in TOKENIZER_FILES:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, staging / name)
        copy_fp32_weights(model_dir, staging)
        if method == "torch":
            fp32_bytes, int8_bytes, nodes, record = _quantize_torch(model_dir, per_channel, fp32_ffn_output)
        else:
            fp32_bytes, int8_bytes, nodes, record = _quantize_onnx(model_dir, staging, per_channel)
        config[QUANTIZATION_KEY] = {**record, "per_channel": per_channel, "source": str(model_dir)}
        atomic_write_text(staging / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        replace_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    weights = model_dir / "model.safetensors"
    return QuantizeReport(out_dir, method, fp32_bytes, int8_bytes, weights.stat().st_size if weights.exists() else 0,
                          nodes)


def _quantize_torch(model_dir: Path, per_channel: bool, fp32_ffn_output: bool) -> tuple[int, int, int, dict[str, Any]]:
    """Check that the model loads and quantizes (so the directory is known to run); its sizes."""
    from bertforge.model.int8 import TORCH_INT8, int8_linears, quantize_linear_int8
    from bertforge.tasks.loading import load_model

    model = load_model(model_dir, backend="torch", device="cpu").model
    fp32_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    linear = [model.get_submodule(name) for name in int8_linears(model, fp32_ffn_output)]
    weights = sum(module.weight.numel() * module.weight.element_size() for module in linear)
    scales = sum(8 * (module.out_features if per_channel else 1) for module in linear)  # fp32 scale + int32 zero
    int8_bytes = fp32_bytes - weights + weights // 4 + scales
    quantize_linear_int8(model, per_channel=per_channel, fp32_ffn_output=fp32_ffn_output)
    record = {"method": TORCH_INT8, "modules": ["Linear"], "weight_type": "qint8", "int8_bytes": int8_bytes,
              "fp32_ffn_output": fp32_ffn_output}
    return fp32_bytes, int8_bytes, len(linear), record


def _quantize_onnx(model_dir: Path, staging: Path, per_channel: bool) -> tuple[int, int, int, dict[str, Any]]:
    """The int8 graph, staging/model.onnx; its sizes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bertforge.export.onnx import export_onnx
    from bertforge.tasks.onnx_backend import DEFAULT_FILE

    fp32 = staging / "model.fp32.onnx"
    export_onnx(model_dir, fp32, check=False)
    quantized = staging / DEFAULT_FILE
    with _quiet_root_logger():
        quantize_dynamic(str(fp32), str(quantized), op_types_to_quantize=["MatMul"], per_channel=per_channel,
                         weight_type=QuantType.QInt8)
    fp32_bytes = fp32.stat().st_size
    fp32.unlink()
    nodes = _count_integer_nodes(quantized)
    record = {"method": "onnxruntime dynamic int8", "op_types": ["MatMul"], "weight_type": "QInt8",
              "quantized_nodes": nodes}
    return fp32_bytes, quantized.stat().st_size, nodes, record


def copy_fp32_weights(model_dir: Path, staging: Path) -> None:
    """The source's fp32 weights into `staging` as safetensors (see the module docstring):
    model.safetensors or a sharded set copied as they are, a pytorch_model.bin converted."""
    index = model_dir / "model.safetensors.index.json"
    if (model_dir / "model.safetensors").exists():
        shutil.copy2(model_dir / "model.safetensors", staging / "model.safetensors")
    elif index.exists():
        shutil.copy2(index, staging / index.name)
        for shard in sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())):
            shutil.copy2(model_dir / shard, staging / shard)
    else:
        from safetensors.torch import save_file

        from bertforge.convert.hf import read_state_dict

        state, _ = read_state_dict(model_dir)  # weights_only=True for a pickle
        save_file({name: tensor.detach().contiguous().clone() for name, tensor in state.items()},
                  str(staging / "model.safetensors"), metadata={"format": "pt"})


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer advises "pre-processing" through the root logger on every call;
    the advice (shape inference for models without dynamic axes) does not apply here."""
    root = logging.getLogger()
    hush = logging.Filter()
    advice = "Please consider to run pre-processing"
    hush.filter = lambda record: not record.getMessage().startswith(advice)  # type: ignore[method-assign]
    root.addFilter(hush)
    try:
        yield
    finally:
        root.removeFilter(hush)


def _count_integer_nodes(path: Path) -> int:
    """MatMuls onnxruntime turned into int8 ones (MatMulInteger or DynamicQuantizeMatMul)."""
    import onnx

    graph = onnx.load(str(path)).graph
    return sum(1 for node in graph.node if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul"))


def describe(report: QuantizeReport) -> dict[str, Any]:
    counted = "quantized_linears" if report.method == "torch" else "quantized_matmuls"
    return {"out": str(report.out_dir), "method": report.method, "fp32_bytes": report.fp32_bytes,
            "int8_bytes": report.int8_bytes, "safetensors_bytes": report.weights_bytes, counted: report.quantized_nodes,
            "size_ratio": round(report.int8_bytes / max(report.fp32_bytes, 1), 4)}
