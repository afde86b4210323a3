"""`bertforge export onnx`: a model directory as one ONNX graph (see bertforge.export.onnx)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertforge.cli.command import Command, option
from bertforge.fileio import OVERWRITE_HELP


@dataclass
class ExportOnnxOptions:
    model: Path | None = option(None, help="model directory (fine-tuned, pretrained or bare encoder)")
    out: Path | None = option(None, help="ONNX file to write (default MODEL/model.onnx)")
    opset: int = option(17, help="ONNX opset version")
    check: bool = option(True, help="run the graph in onnxruntime and compare with PyTorch")
    overwrite: bool = option(False, help=OVERWRITE_HELP)


def run_onnx(options: ExportOnnxOptions) -> int:
    import json

    from bertforge.errors import BertforgeError
    from bertforge.export.onnx import export_onnx
    from bertforge.tasks.onnx_backend import require_onnxruntime

    if options.model is None:
        raise BertforgeError("export onnx needs --model DIR")
    try:
        import onnx  # noqa: F401 - the exporter writes through it
    except ImportError:
        raise BertforgeError("ONNX export needs the onnx package: pip install 'bertforge[onnx]'") from None
    if options.check:
        require_onnxruntime()
    report = export_onnx(options.model, options.out, opset=options.opset, check=options.check,
                         overwrite=options.overwrite)
    summary = {"out": str(report.path), "kind": report.kind, "outputs": report.outputs, "bytes": report.bytes,
               "dynamic_axes": ["batch", "sequence"]}
    if options.check:
        summary["max_abs_diff_vs_pytorch"] = report.max_abs_diff
    print(json.dumps(summary, indent=2))
    return 0


COMMANDS = [Command(
    ("export", "onnx"), ExportOnnxOptions, run_onnx,
    "export a model directory to ONNX (dynamic batch and sequence axes), checked against PyTorch",
    examples=["bertforge export onnx --model runs/sst2/final --out runs/sst2/final/model.onnx",
              "bertforge predict --model runs/sst2/final --backend onnx 'a fine film'",
              "bertforge serve --model runs/sst2/final --backend onnx"])]
