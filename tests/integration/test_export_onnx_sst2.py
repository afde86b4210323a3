"""`bertforge export onnx` on a model fine-tuned on SST-2 rows: onnxruntime's logits on SST-2 dev
sentences match PyTorch's to 1e-4 (batches of every size the dev set gives, dynamic padding),
and `bertforge predict --backend onnx` on the dev file gives PyTorch's labels; then `quantize`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertforge.cli.main import main
from test_serve_fixtures import build_models

pytest.importorskip("onnx", reason="ONNX export is an optional extra: pip install 'bertforge[onnx]'")
pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")


@pytest.fixture(scope="module")
def sst2_model(tmp_path_factory, data_dir):
    return build_models(tmp_path_factory.getbasetemp() / "serve-models", data_dir)["classify"]


def test_parity_on_sst2_dev_and_predict_backend_onnx(sst2_model, data_dir, tmp_path, capsys):
    from bertforge.tasks.loading import load_model

    onnx_file = tmp_path / "sst2.onnx"
    assert main(["export", "onnx", "--model", str(sst2_model), "--out", str(onnx_file)]) == 0
    assert json.loads(capsys.readouterr().out)["max_abs_diff_vs_pytorch"] < 1e-4
    torch_side, onnx_side = load_model(sst2_model), load_model(sst2_model, backend="onnx", onnx_file=onnx_file)
    lines = (data_dir / "glue/sst2/dev.tsv").read_text(encoding="utf-8").split("\n")[1:257]
    sentences = [line.split("\t")[0].strip() for line in lines]
    worst = 0.0
    for start, size in ((0, 1), (1, 7), (8, 32), (40, 64), (104, 152)):
        batch = torch_side.tokenizer(sentences[start:start + size], padding=True, truncation=True, max_length=64,
                                     return_tensors="pt")
        inputs = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        with torch.no_grad():
            expected = torch_side.model(*inputs).logits
        got = onnx_side.model(*inputs).logits
        worst = max(worst, float((got - expected).abs().max()))
    assert worst <= 1e-4, worst

    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\n" + "\n".join(lines[:100]) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(sst2_model), "--input", str(dev),
                 "--out", str(tmp_path / "torch.jsonl")]) == 0
    assert main(["predict", "--model", str(sst2_model), "--input", str(dev), "--backend", "onnx", "--onnx-file",
                 str(onnx_file), "--out", str(tmp_path / "onnx.jsonl")]) == 0
    ours = [json.loads(line) for line in (tmp_path / "onnx.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in (tmp_path / "torch.jsonl").read_text().splitlines()]
    assert len(ours) == 100 and [r["label"] for r in ours] == [r["label"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=1e-4)

    int8 = tmp_path / "int8"
    assert main(["quantize", "--model", str(sst2_model), "--out", str(int8), "--method", "onnx"]) == 0
    sizes = json.loads(capsys.readouterr().out)
    assert sizes["int8_bytes"] < sizes["fp32_bytes"]
    assert main(["predict", "--model", str(int8), "--input", str(dev), "--backend", "onnx",
                 "--out", str(tmp_path / "int8.jsonl")]) == 0
    quantized = [json.loads(line) for line in (tmp_path / "int8.jsonl").read_text().splitlines()]
    agreement = np.mean([a["label"] == b["label"] for a, b in zip(quantized, theirs)])
    assert agreement >= 0.9  # int8 rounding flips only the closest calls
