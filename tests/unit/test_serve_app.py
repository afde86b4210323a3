"""The HTTP app in process (FastAPI's TestClient) on tiny random models of every kind: each endpoint
answers what the library computes, only what the model can answer is routed and documented, and
every bad request gets a 4xx JSON error while the app keeps answering."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="serving is an optional extra: pip install 'bertforge[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from bertforge.serve.app import create_app  # noqa: E402
from bertforge.serve.engine import Engine  # noqa: E402
from bertforge.serve.settings import ServeSettings  # noqa: E402
from test_serve_models import make_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {kind: make_model_dir(root / kind, kind) for kind in ("classify", "ner", "qa", "pretraining")}


def client(directory, **settings) -> TestClient:
    return TestClient(create_app(Engine(directory), ServeSettings(**settings)))


def test_classify_answers_what_predict_answers(models):
    from bertforge.tasks.finetune import predict

    texts = ["the film is good", "a dull film , not good at all", "john"]
    expected = predict(model_dir=models["classify"], task_name=None, settings=_settings(), texts=texts, device="cpu")
    with client(models["classify"]) as http:
        response = http.post("/v1/classify", json={"texts": texts})
    assert response.status_code == 200
    got = response.json()["predictions"]
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in expected], atol=1e-5)
    assert set(got[0]["probabilities"]) == {"negative", "positive"}


def test_ner_and_qa_answer_what_predict_answers(models):
    from bertforge.tasks.finetune import predict

    texts = ["john smith lives in new york", "peter went to paris and berlin ."]
    expected = predict(model_dir=models["ner"], task_name=None, settings=_settings(), texts=texts, device="cpu")
    with client(models["ner"]) as http:
        got = http.post("/v1/ner", json={"texts": texts}).json()["predictions"]
    assert [p["tags"] for p in got] == [p["tags"] for p in expected]
    assert [[e["text"] for e in p["entities"]] for p in got] == [[e["text"] for e in p["entities"]] for p in expected]

    context = "john smith lives in paris . peter went to berlin . " * 4
    questions = ["who lives in paris ?", "where does peter live ?"]
    expected = predict(model_dir=models["qa"], task_name=None, settings=_settings(), texts=questions,
                       context=context, device="cpu")
    with client(models["qa"]) as http:
        got = http.post("/v1/qa", json={"items": [{"question": q, "context": context} for q in questions]}).json()
    assert [(p["answer"], p["start"], p["end"]) for p in got["predictions"]] == \
        [(p["answer"], p["start"], p["end"]) for p in expected]
    for prediction in got["predictions"]:
        assert context[prediction["start"]:prediction["end"]] == prediction["answer"]


def test_fill_mask_and_embeddings_match_the_model(models):
    from bertforge.model import BertForMaskedLM
    from bertforge.tokenizer import BertTokenizer

    directory = models["pretraining"]
    tokenizer = BertTokenizer.from_pretrained(directory)
    with pytest.warns(UserWarning, match="not used by BertForMaskedLM"):  # the NSP head and the pooler
        model = BertForMaskedLM.from_pretrained(directory).eval()
    texts = ["the [MASK] is good", "john [MASK] in [MASK] york ."]
    with client(directory) as http:
        filled = http.post("/v1/fill-mask", json={"texts": texts, "top_k": 3}).json()["predictions"]
        mean = http.post("/v1/embed", json={"texts": texts}).json()
        cls = http.post("/v1/embed", json={"texts": texts, "pooling": "cls", "normalize": True}).json()
    assert [len(p["masks"]) for p in filled] == [1, 2]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).mlm_logits
        hidden = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
    logits[..., tokenizer.all_special_ids] = float("-inf")
    for row, prediction in enumerate(filled):
        for mask in prediction["masks"]:
            probabilities = logits[row, mask["position"]].softmax(-1)
            top = probabilities.topk(3)
            assert [t["token_id"] for t in mask["predictions"]] == top.indices.tolist()
            np.testing.assert_allclose([t["score"] for t in mask["predictions"]], top.values.tolist(), atol=1e-5)
        assert "[MASK]" not in prediction["sequence"]
    lengths = batch["attention_mask"].sum(1)
    for row in range(2):
        expected_mean = hidden[row, :lengths[row]].mean(0)
        np.testing.assert_allclose(mean["embeddings"][row], expected_mean.numpy(), atol=1e-5)
        expected_cls = torch.nn.functional.normalize(hidden[row, 0], dim=0)
        np.testing.assert_allclose(cls["embeddings"][row], expected_cls.numpy(), atol=1e-5)
    assert mean["dimensions"] == 128 and mean["pooling"] == "mean"


def test_only_what_the_model_can_answer_is_routed_and_documented(models):
    with client(models["classify"]) as http:
        paths = set(http.get("/openapi.json").json()["paths"])
        assert {"/v1/classify", "/v1/embed", "/v1/attention", "/attention", "/healthz", "/metrics"} <= paths
        assert not paths & {"/v1/ner", "/v1/qa", "/v1/fill-mask"}
        missing = http.post("/v1/fill-mask", json={"texts": ["a [MASK]"]})
        assert missing.status_code == 404 and "masked-LM head" in missing.json()["error"]["message"]
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["endpoints"] == ["classify", "embed", "attention"]


def test_attention_endpoint_and_page(models):
    with client(models["ner"]) as http:
        maps = http.post("/v1/attention", json={"text": "john smith lives in paris"}).json()
        page = http.get("/attention", params={"text": "peter went to berlin"})
    assert maps["tokens"][0] == "[CLS]" and maps["layers"] == 2 and maps["heads"] == 2
    weights = np.array(maps["weights"])
    assert weights.shape == (2, 2, len(maps["tokens"]), len(maps["tokens"]))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-3)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/attention" in page.text and "peter went to berlin" in page.text


BAD_REQUESTS = [
    # (description, request kwargs, status, error type)
    ("malformed JSON", {"content": b'{"texts": ["a",', "headers": {"content-type": "application/json"}}, 422,
     "validation_error"),
    ("not an object", {"json": ["the film"]}, 422, "validation_error"),
    ("wrong type", {"json": {"texts": "the film"}}, 422, "validation_error"),
    ("wrong item type", {"json": {"texts": [1, 2]}}, 422, "validation_error"),
    ("empty list", {"json": {"texts": []}}, 422, "validation_error"),
    ("missing field", {"json": {"sentences": ["a"]}}, 422, "validation_error"),
    ("a path is not an option", {"json": {"texts": ["a"], "model": "/etc/passwd"}}, 422, "validation_error"),
    ("plain text body", {"content": b"the film", "headers": {"content-type": "text/plain"}}, 422, "validation_error"),
    ("too many items", {"json": {"texts": ["a"] * 9}}, 413, "payload_too_large"),
    ("text too long", {"json": {"texts": ["a " * 300]}}, 413, "payload_too_large"),
    ("body too large", {"json": {"texts": ["the film " * 400]}}, 413, "payload_too_large"),
    ("body too large, streamed", {"content": iter([b'{"texts": ["', b"x" * 3000, b'"]}']),
                                  "headers": {"content-type": "application/json"}}, 413, "payload_too_large"),
    ("pairs of the wrong length", {"json": {"texts": ["a", "b"], "text_pairs": ["c"]}}, 422, "validation_error"),
]


@pytest.mark.parametrize("description, request_kwargs, status, kind", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_requests_get_json_errors_and_the_app_keeps_serving(models, description, request_kwargs, status, kind):
    with client(models["classify"], max_items=8, max_text_chars=500, max_body_bytes=2000) as http:
        response = http.post("/v1/classify", **request_kwargs)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["status"] == status and error["type"] == kind and error["message"]
        assert http.post("/v1/classify", json={"texts": ["the film is good"]}).status_code == 200


def test_unknown_paths_methods_and_unusable_inputs(models):
    with client(models["pretraining"]) as http:
        assert http.get("/v1/nothing").json()["error"]["type"] == "not_found"
        assert http.get("/v1/embed").status_code == 405
        no_mask = http.post("/v1/fill-mask", json={"texts": ["the film is good"]})
        assert no_mask.status_code == 422 and "[MASK]" in no_mask.json()["error"]["message"]
        assert http.post("/v1/fill-mask", json={"texts": ["a [MASK]"], "top_k": 0}).status_code == 422
        assert http.post("/v1/embed", json={"texts": ["a"], "pooling": "max"}).status_code == 422
        assert http.post("/v1/fill-mask", json={"texts": ["the [MASK] is good"]}).status_code == 200


def test_metrics_count_requests_and_model_calls(models):
    with client(models["classify"], micro_batching=True) as http:
        for _ in range(3):
            assert http.post("/v1/classify", json={"texts": ["a good film", "bad"]}).status_code == 200
        http.post("/v1/classify", json={"texts": 5})
        text = http.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    samples = _samples(text.text)
    assert samples['bertforge_requests_total{endpoint="/v1/classify",status="200"}'] == 3
    assert samples['bertforge_requests_total{endpoint="/v1/classify",status="422"}'] == 1
    assert samples['bertforge_items_total{endpoint="classify"}'] == 6
    calls = samples['bertforge_batches_total{endpoint="classify"}']
    assert 1 <= calls <= 3
    assert samples['bertforge_batch_requests_sum{endpoint="classify"}'] == 3
    # prometheus_client writes the labels of a sample in name order.
    assert samples['bertforge_model_info{backend="torch",kind="classify",micro_batching="true",model="classify"}'] == 1
    assert "# TYPE bertforge_request_duration_seconds histogram" in text.text


def test_onnx_backend_serves_the_task_and_embeddings(models, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    from bertforge.export.onnx import export_onnx

    onnx_file = tmp_path / "classify.onnx"
    export_onnx(models["classify"], onnx_file)
    texts = ["the film is good", "a dull film"]
    with client(models["classify"]) as http:
        torch_answer = http.post("/v1/classify", json={"texts": texts}).json()["predictions"]
        torch_vectors = http.post("/v1/embed", json={"texts": texts}).json()["embeddings"]
    app = create_app(Engine(models["classify"], backend="onnx", onnx_file=onnx_file), ServeSettings())
    with TestClient(app) as http:
        assert http.get("/healthz").json()["endpoints"] == ["classify", "embed"]
        onnx_answer = http.post("/v1/classify", json={"texts": texts}).json()["predictions"]
        onnx_vectors = http.post("/v1/embed", json={"texts": texts}).json()["embeddings"]
        assert http.post("/v1/attention", json={"text": "a"}).status_code == 404
    np.testing.assert_allclose([p["score"] for p in onnx_answer], [p["score"] for p in torch_answer], atol=1e-4)
    np.testing.assert_allclose(onnx_vectors, torch_vectors, atol=1e-4)


def _settings():
    from bertforge.tasks.settings import TaskSettings

    return TaskSettings()


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_error_bodies_are_one_json_shape(models):
    with client(models["ner"]) as http:
        body = http.post("/v1/ner", json={"texts": [None]}).json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "type", "message", "details"}
    assert body["error"]["details"][0]["location"] == ["body", "texts", "0"]
    json.dumps(body)


def test_serve_command_errors_are_one_line(models, tmp_path, capsys):
    from bertforge.cli.main import main

    cases = [(["serve"], "serve needs --model DIR"),
             (["serve", "--model", str(tmp_path / "none"), "--port", "0"], "model directory not found"),
             (["serve", "--model", str(models["classify"]), "--port", "70000"], "port must be in 0..65535"),
             (["serve", "--model", str(models["classify"]), "--max-items", "0"], "max-items must be positive"),
             (["serve", "--model", str(models["classify"]), "--backend", "onnx", "--onnx-file",
               str(tmp_path / "none.onnx")], "no ONNX model; run `bertforge export onnx")]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err


def test_onnx_backend_fills_masks_like_pytorch(models, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    from bertforge.export.onnx import export_onnx

    export_onnx(models["pretraining"], tmp_path / "mlm.onnx")
    texts = ["the [MASK] is good", "john [MASK] in paris ."]
    torch_engine = Engine(models["pretraining"])
    onnx_engine = Engine(models["pretraining"], backend="onnx", onnx_file=tmp_path / "mlm.onnx")
    assert onnx_engine.endpoints == ["fill-mask", "embed"]
    expected, got = torch_engine.fill_mask(texts, top_k=3), onnx_engine.fill_mask(texts, top_k=3)
    for ours, theirs in zip(got, expected):
        assert ours["sequence"] == theirs["sequence"]
        for mine, reference in zip(ours["masks"], theirs["masks"]):
            assert [t["token"] for t in mine["predictions"]] == [t["token"] for t in reference["predictions"]]


HOSTILE = [
    # (description, path, request kwargs, status, a piece of the message)
    ("invalid UTF-8", "/v1/classify", {"content": b'{"texts": ["caf\xe9"]}',
                                       "headers": {"content-type": "application/json"}}, 422, "not valid UTF-8"),
    ("an integer as a boolean", "/v1/embed", {"json": {"texts": ["a"], "normalize": 0}}, 422, "normalize"),
    ("a string as an integer", "/v1/fill-mask", {"json": {"texts": ["a [MASK]"], "top_k": "3"}}, 422, "top_k"),
    ("a lone surrogate", "/v1/classify", {"content": b'{"texts": ["ok", "bad \\ud800"]}',
                                          "headers": {"content-type": "application/json"}},
     422, "texts.1: not valid Unicode (lone surrogate)"),
    ("a lone surrogate in a field name", "/v1/classify", {"content": b'{"texts": ["a"], "\\udc00": 1}',
                                                          "headers": {"content-type": "application/json"}},
     422, "unicode string"),
    ("pairs and texts mixed", "/v1/classify", {"json": {"texts": ["a", {"text": "b", "text_pair": "c"}]}}, 422,
     "texts"),
    ("more tokens than the cap", "/v1/classify", {"json": {"texts": ["the film is good . " * 40] * 4}}, 413, "tokens"),
    ("an attention text of white space only", "/v1/attention", {"json": {"text": "\x1d "}}, 422, "only white space"),
    ("a [MASK] the model never reads", "/v1/fill-mask", {"json": {"texts": ["the film " * 80 + "[MASK]"]}}, 413,
     "no [MASK] token in the first"),
]


@pytest.mark.parametrize("description, path, request_kwargs, status, message", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_requests_get_documented_statuses_and_clean_messages(models, description, path, request_kwargs,
                                                                    status, message):
    kind = "pretraining" if path in ("/v1/embed", "/v1/fill-mask") else "classify"
    with client(models[kind], max_request_tokens=500) as http:
        response = http.post(path, **request_kwargs)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert message in error["message"] and "PyString" not in error["message"] and "Tensor" not in error["message"]
        operation = http.get("/openapi.json").json()["paths"][path]["post"]
        assert str(status) in operation["responses"]
        assert operation["responses"][str(status)]["content"]["application/json"]["schema"] == \
            {"$ref": "#/components/schemas/ErrorResponse"}


def test_text_pairs_are_one_item_each_and_the_schema_says_so(models):
    with client(models["classify"]) as http:
        pairs = http.post("/v1/classify", json={"texts": [{"text": "a good film", "text_pair": "john"},
                                                           {"text": "bad", "text_pair": "paris"}]})
        schema = http.get("/openapi.json").json()
    assert pairs.status_code == 200, pairs.text
    assert [(p["text"], p["text_pair"]) for p in pairs.json()["predictions"]] == [("a good film", "john"),
                                                                                   ("bad", "paris")]
    texts = schema["components"]["schemas"]["ClassifyRequest"]["properties"]["texts"]
    assert [choice["items"].get("type", choice["items"].get("$ref")) for choice in texts["oneOf"]] == \
        ["string", "#/components/schemas/TextPair"]


def test_the_token_cap_answers_fast_before_the_model(models):
    import time

    with client(models["classify"], max_items=64, max_text_chars=10_000) as http:
        started = time.perf_counter()
        response = http.post("/v1/classify", json={"texts": ["the film is good " * 588] * 64})
        elapsed = time.perf_counter() - started
    assert response.status_code == 413 and "the limit is 16384" in response.json()["error"]["message"]
    assert elapsed < 5, elapsed


def test_a_client_that_hangs_up_mid_body_is_counted_as_499(models):
    import asyncio

    app = create_app(Engine(models["classify"]), ServeSettings())
    messages = iter([{"type": "http.request", "body": b'{"texts": ["a', "more_body": True},
                     {"type": "http.disconnect"}])
    sent = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1), "server": ("t", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent == []
    metrics = app.state.metrics
    assert metrics.value("bertforge_requests_total", endpoint="/v1/classify", status="499") == 1
    assert metrics.value("bertforge_requests_total", endpoint="/v1/classify", status="500") is None


def test_metrics_are_prometheus_client_output_one_registry_per_app(models):
    from prometheus_client.parser import text_string_to_metric_families

    with client(models["classify"]) as one, client(models["classify"]) as other:
        assert one.post("/v1/classify", json={"texts": ["a good film"]}).status_code == 200
        first, second = one.get("/metrics").text, other.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(first)}
    assert families["bertforge_requests"].type == "counter"
    assert families["bertforge_request_duration_seconds"].type == "histogram"
    assert 'bertforge_requests_total{endpoint="/v1/classify",status="200"} 1.0' in first
    assert 'endpoint="/v1/classify"' not in second
