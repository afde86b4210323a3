"""ONNX export: every kind of model directory, parity with PyTorch at other batch sizes and lengths
than the traced example (dynamic axes), the task predictions through onnxruntime, and the
`predict --backend onnx` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export is an optional extra: pip install 'bertforge[onnx]'")
pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")

from bertforge.cli.main import main  # noqa: E402
from bertforge.export.onnx import export_onnx  # noqa: E402
from bertforge.tasks.loading import load_model  # noqa: E402
from bertforge.tasks.onnx_backend import OnnxModel  # noqa: E402
from test_serve_models import make_model_dir  # noqa: E402


@pytest.mark.parametrize("kind, outputs", [("classify", ["logits", "last_hidden_state"]),
                                           ("ner", ["logits", "last_hidden_state"]),
                                           ("qa", ["start_logits", "end_logits", "last_hidden_state"]),
                                           ("pretraining", ["mlm_logits", "last_hidden_state"]),
                                           ("encoder", ["last_hidden_state"])])
def test_export_matches_pytorch_on_other_shapes(tmp_path, kind, outputs):
    directory = make_model_dir(tmp_path / kind, kind)
    report = export_onnx(directory, tmp_path / "model.onnx")
    assert report.outputs == outputs and report.max_abs_diff < 1e-4
    loaded = load_model(directory)
    session = OnnxModel(tmp_path / "model.onnx", loaded.config).session
    generator = torch.Generator().manual_seed(1)
    for batch, length in ((1, 5), (7, 33), (3, 64)):  # none is the traced (2, 11)
        input_ids = torch.randint(5, loaded.config.vocab_size, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        for row in range(1, batch):
            mask[row, length - row * length // (batch + 1):] = 0
        types = torch.zeros_like(input_ids)
        feeds = {"input_ids": input_ids.numpy(), "token_type_ids": types.numpy(), "attention_mask": mask.numpy()}
        got = dict(zip(outputs, session.run(outputs, feeds)))
        with torch.no_grad():  # the PyTorch model on its default (unpadded) path
            if kind == "encoder":
                expected = {"last_hidden_state": loaded.model(input_ids, types, mask).last_hidden_state}
            else:
                output = loaded.model(input_ids, types, mask, output_hidden_states=True)
                expected = {name: getattr(output, name) for name in outputs if name != "last_hidden_state"}
                expected["last_hidden_state"] = output.hidden_states[-1]
        real = mask.bool().numpy()
        for name in outputs:
            difference = np.abs(got[name] - expected[name].numpy())
            if difference.ndim >= 2 and difference.shape[:2] == real.shape:
                difference = difference[real]
            assert difference.max() < 1e-4, (name, batch, length, difference.max())


@pytest.mark.parametrize("kind", ["classify", "ner", "qa"])
def test_task_predictions_through_onnxruntime(tmp_path, kind):
    directory = make_model_dir(tmp_path / kind, kind)
    export_onnx(directory)
    torch_side, onnx_side = load_model(directory), load_model(directory, backend="onnx")
    assert onnx_side.kind == kind and onnx_side.settings == torch_side.settings
    if kind == "qa":
        inputs = onnx_side.task.inputs_from_texts(["who lives in paris ?", "where is berlin ?"], onnx_side.settings,
                                                  context="john smith lives in paris . " * 8)  # several windows
    else:
        inputs = onnx_side.task.inputs_from_texts(["the film is good", "peter went to berlin and paris ."],
                                                  onnx_side.settings)
    expected = torch_side.task.predict(torch_side.model, torch_side.tokenizer, inputs, torch_side.settings)
    got = onnx_side.task.predict(onnx_side.model, onnx_side.tokenizer, inputs, onnx_side.settings)
    for ours, theirs in zip(got, expected):
        for key in ("label", "tags", "answer", "start", "end"):
            assert ours.get(key) == theirs.get(key)
        if "score" in theirs:
            assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)


def test_predict_backend_onnx_command(tmp_path, capsys):
    directory = make_model_dir(tmp_path / "classify", "classify")
    status = main(["predict", "--model", str(directory), "--backend", "onnx", "the film is good"])
    assert status == 2
    assert "bertforge export onnx" in capsys.readouterr().err
    assert main(["export", "onnx", "--model", str(directory), "--out", str(tmp_path / "graph.onnx")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff_vs_pytorch"] < 1e-4 and report["dynamic_axes"] == ["batch", "sequence"]
    assert main(["predict", "--model", str(directory), "--backend", "onnx", "--onnx-file", str(tmp_path / "graph.onnx"),
                 "the film is good", "a dull film"]) == 0
    onnx_records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", "--model", str(directory), "the film is good", "a dull film"]) == 0
    torch_records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in onnx_records] == [r["label"] for r in torch_records]
    np.testing.assert_allclose([r["score"] for r in onnx_records], [r["score"] for r in torch_records], atol=1e-5)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "onnx", "--model", str(tmp_path / "missing")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    directory = make_model_dir(tmp_path / "encoder", "encoder")
    (tmp_path / "adir").mkdir()
    assert main(["export", "onnx", "--model", str(directory), "--out", str(tmp_path / "adir")]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    assert main(["predict", "--model", str(make_model_dir(tmp_path / "c", "classify")), "--backend", "onnx",
                 "--onnx-file", str(tmp_path / "broken.onnx"), "x"]) == 2
    assert "cannot load the ONNX model" in capsys.readouterr().err
