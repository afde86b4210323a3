"""A task registered from outside the package (tests/tasks_extra/pair_match.py) fine-tunes through
the CLI, predicts, exports to ONNX and is served, with no source file of bertforge changed: the
registry is the only place a task has to be known."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from bertforge.cli.main import main

TASK_FILE = Path(__file__).resolve().parents[1] / "tasks_extra" / "pair_match.py"
WORDS = ["the", "a", "film", "is", "good", "bad", "great", "dull", "cat", "dog", "sat", "ran", "on", "mat",
         "park", "red", "blue", "car", "house", "big", "small"]
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


@pytest.fixture(scope="module")
def pair_match():
    """Import the task module (which registers `pair_match`); unregister it afterwards."""
    from bertforge.tasks import registry

    assert "pair_match" not in registry.task_names()
    spec = importlib.util.spec_from_file_location("bertforge_test_pair_match", TASK_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert "pair_match" in registry.task_names()
    yield module
    registry._REGISTERED.pop("pair_match", None)
    sys.modules.pop(spec.name, None)


def write_pairs(path: Path, count: int, seed: int) -> Path:
    """Pairs that match when they share their first word (learnable from the tokens alone)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        first = rng.sample(WORDS, 3)
        match = rng.random() < 0.5
        second = [first[0] if match else rng.choice([w for w in WORDS if w != first[0]])] + rng.sample(WORDS, 2)
        lines.append(json.dumps({"first": " ".join(first), "second": " ".join(second), "match": int(match)}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finetuned(pair_match, tmp_path_factory):
    root = tmp_path_factory.mktemp("pair_match")
    vocab = root / "vocab.txt"
    vocab.write_text("".join(token + "\n" for token in TOKENS), encoding="utf-8")
    train, dev = write_pairs(root / "train.jsonl", 64, 0), write_pairs(root / "dev.jsonl", 16, 1)
    run = root / "run"
    status = main(["finetune", "--task", "pair_match", "--preset", "tiny", "--vocab", str(vocab),
                   "--train", str(train), "--dev", str(dev), "--out", str(run), "--max-steps", "6",
                   "settings.max_length=24", "settings.threshold=0.5", "trainer.batch_size=16",
                   "trainer.learning_rate=1e-3", "trainer.progress=false", "trainer.tensorboard=false",
                   "trainer.keep_last=1"])
    assert status == 0
    return run, dev


def test_finetune_writes_the_model_with_the_task_settings_and_head_keys(finetuned, capsys):
    from safetensors.torch import load_file

    run, _ = finetuned
    results = json.loads((run / "results.json").read_text())
    assert results["task"] == "pair_match" and results["steps"] == 6 and results["primary_metric"] == "accuracy"
    assert set(results["dev"]) >= {"accuracy", "f1", "examples"} and results["dev"]["examples"] == 16
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["architectures"] == ["BertForPairMatching"]
    assert config["finetuning"] == {"task": "pair_match", "settings": {
        "format": "auto", "max_length": 24, "first_key": "first", "second_key": "second", "label_key": "match",
        "threshold": 0.5}}
    weights = load_file(run / "final" / "model.safetensors")
    assert "match_scorer.weight" in weights and "bert.pooler.dense.weight" in weights  # the task's key map
    records = [json.loads(line) for line in (run / "dev_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 16 and all(set(r) == {"first", "second", "match", "score", "gold"} for r in records)
    # An unknown settings key is the task's to reject, before anything is written.
    assert main(["finetune", "--task", "pair_match", "--preset", "tiny", "--vocab", str(run / "final" / "vocab.txt"),
                 "--train", "x", "--dev", "y", "--out", str(run.parent / "never"), "settings.doc_stride=3"]) == 2
    assert "settings.doc_stride" in capsys.readouterr().err and not (run.parent / "never").exists()


def test_predict_evaluate_export_and_onnx_predict(finetuned, capsys, tmp_path):
    run, dev = finetuned
    final = str(run / "final")
    capsys.readouterr()
    assert main(["predict", "--model", final, "--text-pair", "the cat sat", "the dog ran", "a red car"]) == 0
    torch_records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["second"] for r in torch_records] == ["the cat sat"] * 2
    assert all(isinstance(r["match"], bool) and 0.0 <= r["score"] <= 1.0 for r in torch_records)

    assert main(["evaluate", "--model", final, "--data", str(dev)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    results = json.loads((run / "results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(results["dev"]["accuracy"])

    assert main(["export", "onnx", "--model", final]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "pair_match" and report["outputs"] == ["match_logits", "last_hidden_state"]
    assert report["max_abs_diff_vs_pytorch"] < 1e-4
    assert main(["predict", "--model", final, "--backend", "onnx", "--text-pair", "the cat sat", "the dog ran",
                 "a red car"]) == 0
    onnx_records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["match"] for r in onnx_records] == [r["match"] for r in torch_records]
    np.testing.assert_allclose([r["score"] for r in onnx_records], [r["score"] for r in torch_records], atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_served_on_its_own_route_with_its_own_schema(finetuned, backend):
    pytest.importorskip("fastapi", reason="serving is an optional extra")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from bertforge.serve.app import create_app
    from bertforge.serve.engine import Engine
    from bertforge.serve.settings import ServeSettings
    from bertforge.tasks.finetune import predict

    run, _ = finetuned
    final = run / "final"
    if backend == "onnx" and not (final / "model.onnx").exists():
        assert main(["export", "onnx", "--model", str(final)]) == 0
    pairs = [{"first": "the dog ran", "second": "the cat sat"}, {"first": "a red car", "second": "big house"}]
    engine = Engine(final, backend=backend)
    assert engine.endpoints[0] == "pair_match" and engine.describe()["kind"] == "pair_match"
    with TestClient(create_app(engine, ServeSettings(max_items=4))) as http:
        answer = http.post("/v1/pair_match", json={"pairs": pairs})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == "final" and [p["first"] for p in body["predictions"]] == ["the dog ran", "a red car"]
        expected = [predict(model_dir=final, task_name=None, texts=[pair["first"]], text_pair=pair["second"],
                            device="cpu")[0] for pair in pairs]
        np.testing.assert_allclose([p["score"] for p in body["predictions"]], [e["score"] for e in expected],
                                   atol=1e-4)
        assert http.get("/healthz").json()["endpoints"][0] == "pair_match"
        schema = http.get("/openapi.json").json()
        assert "/v1/pair_match" in schema["paths"] and "PairMatchRequest" in schema["components"]["schemas"]
        unknown = http.post("/v1/pair_match", json={"pairs": pairs, "extra": 1})
        assert unknown.status_code == 422 and unknown.json()["error"]["type"] == "validation_error"
        empty = http.post("/v1/pair_match", json={"pairs": [{"first": " ", "second": "x"}]})
        assert empty.status_code == 422 and "non-empty" in empty.json()["error"]["message"]
        too_many = http.post("/v1/pair_match", json={"pairs": pairs * 3})
        assert too_many.status_code == 413
        unserved = http.post("/v1/classify", json={"texts": ["a"]})
        assert unserved.status_code == 404 and unserved.json()["error"]["type"] == "not_served"
