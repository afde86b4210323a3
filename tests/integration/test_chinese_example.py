"""The founding example, "这是一个好产品", end to end (issue 20): a small model fine-tuned by
`bertforge finetune` with configs/finetune/chnsenticorp.yaml on real Chinese reviews says
positive for "这是一个好产品" and negative for "这是一个差产品", with their probabilities, through
`bertforge predict` and through `bertforge serve` at /v1/classify, which answer alike.

The model is the tiny preset with the bert-base-chinese vocab, from random weights (no Chinese
checkpoint can be had here), fine-tuned for 600 steps on 4,000 waimai_10k reviews, half of each
label, at max_length 64: about a minute on two cores. waimai_10k, not ChnSentiCorp: its reviews
are short and about a product (food delivery), like the two sentences, while ChnSentiCorp's are
long hotel reviews. A random-init tiny model fine-tuned the same way on 4,000 ChnSentiCorp
reviews scored 0.835 on held-out ones but put "这是一个好产品" at 0.23 positive (measured
2026-12-02); on waimai_10k it gave 0.90 and 0.01. A pretrained model does not need the
help: that is the runs/chnsenticorp/final of the README. The assertions hold with a margin (each
probability above 0.75), not at a coin's edge."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertforge.cli.main import main
from test_serve_fixtures import REPO, start_server, wait_until_up

SENTENCES = ["这是一个好产品", "这是一个差产品"]
EXPECTED = ["positive", "negative"]
RECIPE = REPO / "configs" / "finetune" / "chnsenticorp.yaml"


def _reviews(source: Path, per_label: int, skip: int = 0) -> list[dict[str, str]]:
    """`per_label` reviews of each label (after the first `skip` of each, in file order),
    alternating negative and positive: the file holds all its positives first."""
    by_label: dict[str, list[dict[str, str]]] = {"0": [], "1": []}
    with open(source, encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            label, review = row["label"].strip(), (row["review"] or "").strip()
            if label in by_label and review:
                by_label[label].append({"label": label, "text": review})
    pairs = zip(by_label["0"][skip:skip + per_label], by_label["1"][skip:skip + per_label])
    return [row for pair in pairs for row in pair]


def _write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def _bertforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertforge", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory, data_dir) -> Path:
    source = data_dir / "zh" / "waimai_10k" / "waimai_10k.csv"
    vocab = data_dir / "vocab" / "bert-base-chinese-vocab.txt"
    if not source.exists() or not vocab.exists():
        pytest.skip(f"waimai_10k or the bert-base-chinese vocab missing under {data_dir}")
    root = tmp_path_factory.mktemp("waimai")
    train = _write_jsonl(_reviews(source, 2000), root / "train.jsonl")
    dev = _write_jsonl(_reviews(source, 100, skip=2000), root / "dev.jsonl")
    status = main(["finetune", "--config", str(RECIPE), "--preset", "tiny", "--vocab", str(vocab), "--train", str(train),
                   "--dev", str(dev), "--out", str(root / "run"), "--max-steps", "600", "settings.max_length=64",
                   "trainer.learning_rate=1e-3", "trainer.progress=false", "trainer.tensorboard=false"])
    assert status == 0
    return root / "run" / "final"


@pytest.fixture(scope="module")
def cli_predictions(sentiment_model) -> list[dict]:
    """`bertforge predict` on the two sentences, one JSON record each."""
    done = _bertforge("predict", "--model", str(sentiment_model), "--task", "classify", *SENTENCES)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_predict_says_positive_and_negative_with_probabilities(cli_predictions):
    predictions = cli_predictions
    assert [p["label"] for p in predictions] == EXPECTED, predictions
    for prediction, label in zip(predictions, EXPECTED):
        assert set(prediction["probabilities"]) == {"negative", "positive"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["probabilities"][label] > 0.75, prediction


def test_serve_gives_the_same_answer_over_http(sentiment_model, cli_predictions, tmp_path):
    pytest.importorskip("fastapi", reason="serving is an optional extra: pip install 'bertforge[serve]'")
    httpx = pytest.importorskip("httpx", reason="the server test talks to it with httpx")
    expected = cli_predictions
    server = start_server(sentiment_model, tmp_path / "serve.log")
    try:
        wait_until_up(server)
        response = httpx.post(server.url + "/v1/classify", json={"texts": SENTENCES}, timeout=60)
        assert response.status_code == 200, response.text
        got = response.json()["predictions"]
    finally:
        server.stop()
    assert [p["label"] for p in got] == EXPECTED
    for answer, reference in zip(got, expected):
        for label in ("negative", "positive"):
            assert answer["probabilities"][label] == pytest.approx(reference["probabilities"][label], abs=1e-5)
