"""Models and servers for the serve/export integration tests (imported by them), and a check of
the models themselves.

The task models are tiny (L2/H128) and randomly initialized with the BERT uncased vocab, then
fine-tuned for a few steps with the tasks code on real rows: 300 SST-2 sentences, 200 CoNLL-2003
sentences, the questions of the first two SQuAD dev articles (scored on three paragraphs of the
third). A real fine-tune of a pretrained model would take minutes on two cores; these take
seconds and are real fine-tuned directories (config, label maps, task settings) for the server
to load. The masked-LM model is a random tiny BertForPreTraining with the same vocab (fill-mask
answers are compared with the model's own logits, so what it learned does not matter).

Every model is built once per test session, in pytest's base temporary directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KINDS = ("classify", "ner", "qa", "pretraining")


def _first_lines(source: Path, target: Path, count: int) -> Path:
    target.write_text("\n".join(source.read_text(encoding="utf-8").split("\n")[:count + 1]) + "\n", encoding="utf-8")
    return target


def _first_sentences(source: Path, target: Path, count: int) -> Path:
    blocks = [block for block in source.read_text(encoding="utf-8").split("\n\n") if block.strip()][:count]
    target.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return target


def _first_articles(source: Path, target: Path, skip: int, count: int, paragraphs: int | None = None) -> Path:
    data = json.loads(source.read_text(encoding="utf-8"))
    data["data"] = data["data"][skip:skip + count]
    if paragraphs is not None:
        for article in data["data"]:
            article["paragraphs"] = article["paragraphs"][:paragraphs]
    target.write_text(json.dumps(data), encoding="utf-8")
    return target


def _fine_tune(kind: str, train: Path, dev: Path, out: Path, vocab: Path, steps: int, settings: dict) -> Path:
    from bertforge.tasks.finetune import FinetuneRun, finetune
    from bertforge.train.config import TrainConfig

    config = TrainConfig(batch_size=16, max_steps=steps, learning_rate=2e-3, warmup_ratio=0.1, progress=False,
                         tensorboard=False, keep_last=1, log_every=5)
    finetune(FinetuneRun(task=kind, train=train, dev=dev, out=out, settings=settings, trainer=config,
                         max_steps=steps, preset="tiny", vocab=vocab))
    return out / "final"


def build_models(root: Path, data_dir: Path) -> dict[str, Path]:
    """The four model directories (see the module docstring), built once under `root`."""
    import torch

    from bertforge.config import BertConfig
    from bertforge.model import BertForPreTraining
    from bertforge.tokenizer import BertTokenizer

    marker = root / "complete.json"
    if marker.exists():
        return {kind: Path(path) for kind, path in json.loads(marker.read_text()).items()}
    root.mkdir(parents=True, exist_ok=True)
    uncased = data_dir / "vocab/bert-base-uncased-vocab.txt"
    models = {
        "classify": _fine_tune("classify", _first_lines(data_dir / "glue/sst2/train.tsv", root / "sst2-train.tsv", 300),
                               _first_lines(data_dir / "glue/sst2/dev.tsv", root / "sst2-dev.tsv", 64),
                               root / "classify", uncased, 20, {"max_length": 64}),
        "ner": _fine_tune("ner", _first_sentences(data_dir / "conll2003/train.txt", root / "conll-train.txt", 200),
                          _first_sentences(data_dir / "conll2003/valid.txt", root / "conll-dev.txt", 40),
                          root / "ner", uncased, 20, {"max_length": 64}),
        "qa": _fine_tune("qa", _first_articles(data_dir / "squad/dev-v1.1.json", root / "squad-train.json", 0, 2),
                         _first_articles(data_dir / "squad/dev-v1.1.json", root / "squad-dev.json", 2, 1, 3),
                         root / "qa", uncased, 10,
                         {"max_length": 128, "doc_stride": 48, "max_query_length": 32}),
    }
    tokenizer = BertTokenizer(uncased, lowercase=True)
    torch.manual_seed(0)
    pretraining = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size))
    pretraining.save_pretrained(root / "pretraining", tokenizer=tokenizer)
    models["pretraining"] = root / "pretraining"
    marker.write_text(json.dumps({kind: str(path) for kind, path in models.items()}))
    return models


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A `bertforge serve` process on loopback."""

    process: subprocess.Popen
    url: str
    log: Path

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_server(model: Path, log: Path, *args: str) -> Server:
    """Start `bertforge serve --model MODEL` on a free loopback port (no --host: the default)."""
    port = free_port()
    handle = open(log, "w", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "bertforge", "serve", "--model", str(model), "--port", str(port),
                                *args], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    handle.close()
    return Server(process, f"http://127.0.0.1:{port}", log)


def wait_until_up(server: Server, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"the server did not come up in {timeout} s:\n{server.output()}")


def test_the_fine_tuned_models_are_task_directories(tmp_path_factory, data_dir):
    from bertforge.tasks.loading import kind_of, read_config

    models = build_models(tmp_path_factory.getbasetemp() / "serve-models", data_dir)
    assert {kind: kind_of(read_config(path)) for kind, path in models.items()} == {
        "classify": "classify", "ner": "ner", "qa": "qa", "pretraining": "masked_lm"}
    labels = read_config(models["ner"]).id2label
    assert labels is not None and {"B-PER", "I-ORG", "O"} <= set(labels.values())
    assert (models["classify"] / "vocab.txt").exists() and json.loads(
        (models["classify"] / "config.json").read_text())["finetuning"]["settings"]["max_length"] == 64


def pytest_skip_without_serving() -> None:
    pytest.importorskip("fastapi", reason="serving is an optional extra: pip install 'bertforge[serve]'")
    pytest.importorskip("uvicorn", reason="serving is an optional extra: pip install 'bertforge[serve]'")
    pytest.importorskip("httpx", reason="the server tests talk to it with httpx")
