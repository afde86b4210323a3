"""`bertforge finetune/evaluate/predict --task qa` end to end on real SQuAD v1.1 and CMRC2018
questions with a tiny randomly initialized model: long contexts are windowed, the loss falls,
answers index the original context, and transformers' BertForQuestionAnswering loads the result
with the same start and end logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertforge.cli.main import main


def first_questions(source: Path, target: Path, skip: int, count: int) -> Path:
    document = json.loads(source.read_text(encoding="utf-8"))
    kept, seen = [], 0
    for article in document["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = []
            for qa in paragraph["qas"]:
                if skip <= seen < skip + count:
                    qas.append(qa)
                seen += 1
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
    target.write_text(json.dumps({"version": document.get("version"), "data": kept}, ensure_ascii=False),
                      encoding="utf-8")
    return target


CASES = {
    "squad": ("squad/dev-v1.1.json", "vocab/bert-base-uncased-vocab.txt"),
    "cmrc2018": ("zh/cmrc2018/cmrc2018_trial.json", "vocab/bert-base-chinese-vocab.txt"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_qa_finetune_evaluate_predict_and_transformers_parity(name, data_dir, tmp_path, capsys):
    source, vocab = CASES[name]
    train = first_questions(data_dir / source, tmp_path / "train.json", 0, 200)
    dev = first_questions(data_dir / source, tmp_path / "dev.json", 200, 24)
    run = tmp_path / "run"
    status = main(["finetune", "--task", "qa", "--preset", "tiny", "--vocab", str(data_dir / vocab),
                   "--train", str(train), "--dev", str(dev), "--out", str(run), "--max-steps", "20",
                   "settings.max_length=160", "settings.doc_stride=64", "settings.max_query_length=32",
                   "trainer.batch_size=16", "trainer.learning_rate=2e-3", "trainer.warmup_ratio=0.1",
                   "trainer.log_every=1", "trainer.progress=false", "trainer.tensorboard=false",
                   "trainer.keep_last=1"])
    assert status == 0
    results = json.loads((run / "results.json").read_text())
    assert results["train_features"] > 200  # long contexts became several windows
    assert set(results["dev"]) >= {"exact", "f1"}
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("split") == "train"]
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4

    capsys.readouterr()
    predictions = tmp_path / "predictions.jsonl"
    assert main(["evaluate", "--model", str(run / "final"), "--data", str(dev), "--out", str(tmp_path / "m.json"),
                 "--predictions", str(predictions)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["f1"] == pytest.approx(results["dev"]["f1"])
    document = json.loads(dev.read_text(encoding="utf-8"))
    contexts = {qa["id"]: p["context"] for a in document["data"] for p in a["paragraphs"] for qa in p["qas"]}
    for line in predictions.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert contexts[record["id"]][record["start"]:record["end"]] == record["answer"]
        assert record["answer"] and 0 < record["score"] <= 1 and record["gold"]

    context = contexts[next(iter(contexts))]
    assert main(["predict", "--model", str(run / "final"), "--context", context, "Who?", "When?"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["question"] for a in answers] == ["Who?", "When?"]
    assert all(context[a["start"]:a["end"]] == a["answer"] for a in answers)

    transformers = pytest.importorskip("transformers")
    from bertforge.tasks.qa import BertForQuestionAnswering
    from bertforge.tokenizer import BertTokenizer

    theirs = transformers.BertForQuestionAnswering.from_pretrained(run / "final").eval()
    ours = BertForQuestionAnswering.from_pretrained(run / "final").eval()
    tokenizer = BertTokenizer.from_pretrained(run / "final")
    batch = tokenizer(["Who?", "When?"], [context, context], truncation="only_second", max_length=160,
                      padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()  # padded positions are never answers
    with torch.no_grad():
        reference, mine = theirs(**batch), ours(**batch)
    torch.testing.assert_close(mine.start_logits[real], reference.start_logits[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mine.end_logits[real], reference.end_logits[real], atol=1e-4, rtol=1e-4)
