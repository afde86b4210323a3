"""`bertforge serve` over loopback, one real server process per model: every endpoint answers what
the library answers (for fine-tuned tiny models on SST-2, CoNLL-2003 and SQuAD rows, and a masked-LM
model), bad bodies get 4xx JSON while the server keeps serving, concurrent requests (micro-batched)
get the same answers as single ones, and SIGTERM lets in-flight requests finish."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import numpy as np
import pytest

from test_serve_fixtures import Server, build_models, pytest_skip_without_serving, start_server, wait_until_up

pytest_skip_without_serving()
import httpx  # noqa: E402

LIMITS = ["--max-items", "16", "--max-text-chars", "2000", "--max-body-bytes", "20000", "--log-level", "info"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, data_dir):
    return build_models(tmp_path_factory.getbasetemp() / "serve-models", data_dir)


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory):
    logs = tmp_path_factory.mktemp("server-logs")
    running = {kind: start_server(path, logs / f"{kind}.log", *LIMITS) for kind, path in models.items()}
    try:
        for server in running.values():
            wait_until_up(server)
        yield running
    finally:
        for server in running.values():
            server.stop()


def post(server: Server, path: str, body: dict) -> dict:
    response = httpx.post(server.url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def library_predict(model, texts, context=None):
    from bertforge.tasks.finetune import predict
    from bertforge.tasks.settings import TaskSettings

    return predict(model_dir=model, task_name=None, settings=TaskSettings(), texts=texts, context=context, device="cpu")


def test_binds_loopback_by_default(servers):
    for server in servers.values():
        assert f"Uvicorn running on {server.url}" in server.output()


def test_classify_on_sst2_sentences(servers, models, data_dir):
    lines = (data_dir / "glue/sst2/dev.tsv").read_text(encoding="utf-8").split("\n")[100:112]
    texts = [line.split("\t")[0].strip() for line in lines]
    got = post(servers["classify"], "/v1/classify", {"texts": texts})["predictions"]
    expected = library_predict(models["classify"], texts)
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in expected], atol=1e-5)
    assert all(set(p["probabilities"]) == {"0", "1"} for p in got)


def test_ner_on_conll_sentences(servers, models):
    texts = ["Peter Blackburn went to Brussels on Monday .", "EU rejects German call to boycott British lamb ."]
    got = post(servers["ner"], "/v1/ner", {"texts": texts})["predictions"]
    expected = library_predict(models["ner"], texts)
    assert [p["tags"] for p in got] == [p["tags"] for p in expected]
    for prediction, text in zip(got, texts):
        assert len(prediction["tags"]) == len(text.split())
        for entity in prediction["entities"]:
            assert text[entity["start"]:entity["end"]] == entity["text"]


def test_qa_on_squad_questions(servers, models, data_dir):
    article = json.loads((data_dir / "squad/dev-v1.1.json").read_text(encoding="utf-8"))["data"][5]
    paragraph = article["paragraphs"][0]
    questions = [qa["question"] for qa in paragraph["qas"][:4]]
    got = post(servers["qa"], "/v1/qa", {"items": [{"question": q, "context": paragraph["context"]}
                                                   for q in questions]})["predictions"]
    expected = library_predict(models["qa"], questions, context=paragraph["context"])
    assert [(p["answer"], p["start"], p["end"]) for p in got] == [(p["answer"], p["start"], p["end"]) for p in expected]
    for prediction in got:
        assert paragraph["context"][prediction["start"]:prediction["end"]] == prediction["answer"] != ""


def test_fill_mask_embed_and_attention(servers, models):
    import torch

    from bertforge.tasks.loading import load_model
    from bertforge.serve.engine import pool

    loaded = load_model(models["pretraining"])
    texts = ["The capital of France is [MASK] .", "She [MASK] the book [MASK] the shelf ."]
    filled = post(servers["pretraining"], "/v1/fill-mask", {"texts": texts, "top_k": 4})["predictions"]
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = loaded.encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
        logits = loaded.model.mlm(hidden, loaded.encoder.embeddings.word_embeddings.weight)
    logits[..., loaded.tokenizer.all_special_ids] = float("-inf")
    assert [len(p["masks"]) for p in filled] == [1, 2]
    for row, prediction in enumerate(filled):
        for mask in prediction["masks"]:
            expected = logits[row, mask["position"]].topk(4).indices.tolist()
            assert [t["token_id"] for t in mask["predictions"]] == expected
    for pooling in ("mean", "cls"):
        for kind in ("pretraining", "classify"):
            vectors = post(servers[kind], "/v1/embed", {"texts": texts, "pooling": pooling})["embeddings"]
            encoder = load_model(models[kind]).encoder
            with torch.no_grad():
                state = encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
            np.testing.assert_allclose(vectors, pool(state, batch["attention_mask"], pooling).numpy(), atol=1e-4)
    maps = post(servers["qa"], "/v1/attention", {"text": texts[0]})
    assert maps["tokens"][:3] == ["[CLS]", "the", "capital"]
    np.testing.assert_allclose(np.array(maps["weights"]).sum(-1), 1.0, atol=1e-3)


BAD = [
    ("Content-Length over the limit", {"content": b"{" + b" " * 30000 + b"}",
                                       "headers": {"content-type": "application/json"}}, 413),
    ("streamed body over the limit", {"content": iter([b'{"texts": ["'] + [b"x" * 1000] * 30 + [b'"]}']),
                                      "headers": {"content-type": "application/json"}}, 413),
    ("too many texts", {"json": {"texts": ["a film"] * 17}}, 413),
    ("text too long", {"json": {"texts": ["word " * 500]}}, 413),
    ("malformed JSON", {"content": b'{"texts": ["a film"', "headers": {"content-type": "application/json"}}, 422),
    ("wrong type", {"json": {"texts": "a film"}}, 422),
    ("wrong item types", {"json": {"texts": [None, 3.5, {"a": 1}]}}, 422),
    ("unknown field (a path)", {"json": {"texts": ["a"], "model_dir": "/etc"}}, 422),
    ("empty body", {"content": b"", "headers": {"content-type": "application/json"}}, 422),
    ("not JSON at all", {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "application/json"}}, 422),
]


@pytest.mark.parametrize("description, request_kwargs, status", BAD, ids=[case[0] for case in BAD])
def test_bad_bodies_get_json_errors_and_the_server_keeps_serving(servers, description, request_kwargs, status):
    server = servers["classify"]
    response = httpx.post(server.url + "/v1/classify", timeout=30, **request_kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    assert httpx.get(server.url + "/healthz", timeout=10).json()["status"] == "ok"
    assert post(server, "/v1/classify", {"texts": ["a gripping film"]})["predictions"][0]["label"] in ("0", "1")
    assert server.process.poll() is None


def test_unknown_routes_and_unserved_endpoints(servers):
    assert httpx.get(servers["classify"].url + "/v1/unknown").status_code == 404
    unserved = httpx.post(servers["classify"].url + "/v1/fill-mask", json={"texts": ["a [MASK]"]})
    assert unserved.status_code == 404 and unserved.json()["error"]["type"] == "not_served"
    docs = httpx.get(servers["ner"].url + "/openapi.json").json()
    assert "/v1/ner" in docs["paths"] and "/v1/classify" not in docs["paths"]
    assert httpx.get(servers["ner"].url + "/docs").status_code == 200


async def _concurrently(url: str, bodies: list[dict], clients: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=clients)
    semaphore = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one(body: dict) -> httpx.Response:
            async with semaphore:
                return await client.post("/v1/classify", json=body)

        return await asyncio.gather(*(one(body) for body in bodies))


def test_concurrent_requests_get_the_answers_of_single_ones(servers, data_dir):
    server = servers["classify"]
    lines = (data_dir / "glue/sst2/dev.tsv").read_text(encoding="utf-8").split("\n")[1:41]
    texts = [line.split("\t")[0].strip() for line in lines]
    single = [post(server, "/v1/classify", {"texts": [text]})["predictions"][0] for text in texts]
    responses = asyncio.run(_concurrently(server.url, [{"texts": [text]} for text in texts] * 2, clients=20))
    assert [response.status_code for response in responses] == [200] * 80
    for index, response in enumerate(responses):
        prediction = response.json()["predictions"][0]
        assert prediction["text"] == texts[index % 40] and prediction["label"] == single[index % 40]["label"]
        assert prediction["score"] == pytest.approx(single[index % 40]["score"], abs=1e-4)
    metrics = httpx.get(server.url + "/metrics").text
    values = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
              for line in metrics.splitlines() if line and not line.startswith("#")}
    calls = values['bertforge_batches_total{endpoint="classify"}']
    merged = values['bertforge_batch_requests_sum{endpoint="classify"}']
    assert values['bertforge_batch_requests_count{endpoint="classify"}'] == calls
    assert merged >= 120 and calls <= merged  # every request went through a (possibly shared) model call


def test_sigterm_lets_in_flight_requests_finish(models, tmp_path):
    # Requests wait up to 3 s in the batcher's queue, so they are surely in flight at SIGTERM.
    server = start_server(models["classify"], tmp_path / "server.log", "--max-wait-ms", "3000",
                          "--batch-size", "64", "--log-level", "info")
    try:
        wait_until_up(server)

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                tasks = [asyncio.create_task(client.post("/v1/classify", json={"texts": [f"film number {i}"]}))
                         for i in range(8)]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    metrics = (await client.get("/metrics")).text
                    if "bertforge_queued_requests 8" in metrics:
                        break
                    await asyncio.sleep(0.05)
                server.process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks)

        responses = asyncio.run(scenario())
        assert [response.status_code for response in responses] == [200] * 8
        # uvicorn exits by re-raising the signal it handled, once the shutdown is complete.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/healthz", timeout=2)
        log = server.output()
        assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log
    finally:
        server.stop()
