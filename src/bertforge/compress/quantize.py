"""Dynamic int8 quantization of a model directory's Linear layers, through onnxruntime.

The model is exported to ONNX (`bertforge.export.onnx`), then onnxruntime's `quantize_dynamic`
stores every MatMul weight (the Linear layers: query/key/value, attention output, both
feed-forward matrices, pooler, heads) as int8 with one scale per tensor, and quantizes the
activations on the fly at run time (dynamic quantization: no calibration data). Embeddings and
LayerNorms stay fp32.

Why onnxruntime rather than torch.ao: the int8 model must be saved and loaded again, and
torch.ao's packed int8 modules have no safetensors form (only pickles, which bertforge never
loads); an ONNX file is plain data and runs with onnxruntime's int8 kernels.

The output directory is a model directory (config.json with a `quantization` record, tokenizer
files) whose int8 weights are `model.onnx`; `bertforge predict`, `evaluate` and `serve` run that
graph (their default backend, auto, picks onnx for such a directory; `bertforge.tasks.onnx_backend`).
Beside it lie the fp32 weights it was quantized from (`model.safetensors`, copied from the
source, or converted from its `pytorch_model.bin`), so that transformers' `BertFor*` classes,
which cannot run an int8 ONNX graph, still load the directory: as the float model, with the
source's outputs (and `--backend torch` runs those weights in bertforge). The price is disk:
the directory holds both, so its size is not the int8 size (`QuantizeReport.int8_bytes` is).
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


@dataclass
class QuantizeReport:
    out_dir: Path
    fp32_bytes: int
    """Size of the fp32 ONNX graph."""
    int8_bytes: int
    weights_bytes: int
    """Size of the source directory's weights (model.safetensors)."""
    quantized_nodes: int


def quantize_model(model_dir: str | Path, out_dir: str | Path, *, per_channel: bool = False,
                   overwrite: bool = False) -> QuantizeReport:
    """Write the int8 model directory `out_dir` (atomically: complete or absent). An existing
    model there is replaced only with `overwrite`; `out_dir` is never `model_dir` nor holds it."""
    from bertforge.export.onnx import export_onnx
    from bertforge.tasks.onnx_backend import DEFAULT_FILE, require_onnxruntime

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    # The fp32 weights would be lost: the whole output directory is replaced.
    prepare_output(out_dir, kind="directory", finished=(*MODEL_FILES, "vocab.txt"), what="model",
                   overwrite=overwrite, inputs=[model_dir], whole=True)
    require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not (model_dir / "config.json").exists():
        raise BertforgeError("no config.json: not a model directory", path=model_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fp32 = staging / "model.fp32.onnx"
        export_onnx(model_dir, fp32, check=False)
        quantized = staging / DEFAULT_FILE
        with _quiet_root_logger():
            quantize_dynamic(str(fp32), str(quantized), op_types_to_quantize=["MatMul"], per_channel=per_channel,
                             weight_type=QuantType.QInt8)
        fp32_bytes = fp32.stat().st_size
        fp32.unlink()
        for name in TOKENIZER_FILES:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, staging / name)
        copy_fp32_weights(model_dir, staging)
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        nodes = _count_integer_nodes(quantized)
        config[QUANTIZATION_KEY] = {"method": "onnxruntime dynamic int8", "op_types": ["MatMul"],
                                    "weight_type": "QInt8", "per_channel": per_channel,
                                    "source": str(model_dir), "quantized_nodes": nodes}
        atomic_write_text(staging / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        int8_bytes = quantized.stat().st_size
        replace_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    weights = model_dir / "model.safetensors"
    return QuantizeReport(out_dir, fp32_bytes, int8_bytes, weights.stat().st_size if weights.exists() else 0, nodes)


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
    return {"out": str(report.out_dir), "fp32_onnx_bytes": report.fp32_bytes, "int8_onnx_bytes": report.int8_bytes,
            "safetensors_bytes": report.weights_bytes, "quantized_matmuls": report.quantized_nodes,
            "size_ratio": round(report.int8_bytes / max(report.fp32_bytes, 1), 4)}
