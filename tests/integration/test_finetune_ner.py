"""`bertforge finetune/predict --task ner` end to end on real CoNLL-2003 and MSRA sentences with a
tiny randomly initialized model: the loss falls, predicted entity spans index the original text,
and transformers' BertForTokenClassification loads the result with the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertforge.cli.main import main


def first_sentences(source: Path, target: Path, count: int) -> Path:
    blocks = [b for b in source.read_text(encoding="utf-8").split("\n\n") if b.strip()][:count]
    target.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return target


CASES = {
    "conll2003": ("conll2003/train.txt", "conll2003/valid.txt", "vocab/bert-base-cased-vocab.txt",
                  "EU rejects German call to boycott British lamb . Peter Blackburn went to Brussels ."),
    "msra": ("zh/msra_ner/train.txt", "zh/msra_ner/test.txt", "vocab/bert-base-chinese-vocab.txt",
             "中国人民银行在北京召开会议，周小川出席。"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ner_finetune_predict_and_transformers_parity(name, data_dir, tmp_path, capsys):
    train_file, dev_file, vocab, text = CASES[name]
    train = first_sentences(data_dir / train_file, tmp_path / "train.txt", 200)
    dev = first_sentences(data_dir / dev_file, tmp_path / "dev.txt", 40)
    run = tmp_path / "run"
    status = main(["finetune", "--task", "ner", "--preset", "tiny", "--vocab", str(data_dir / vocab),
                   "--train", str(train), "--dev", str(dev), "--out", str(run), "--max-steps", "20",
                   "settings.max_length=64", "trainer.batch_size=16", "trainer.learning_rate=2e-3",
                   "trainer.warmup_ratio=0.1", "trainer.log_every=1", "trainer.progress=false",
                   "trainer.tensorboard=false", "trainer.keep_last=1"])
    assert status == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("split") == "train"]
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    results = json.loads((run / "results.json").read_text())
    assert set(results["dev"]) >= {"precision", "recall", "f1", "accuracy"}
    config = json.loads((run / "final/config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["id2label"]["0"] == "O"

    capsys.readouterr()
    assert main(["predict", "--model", str(run / "final"), text]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == text and len(record["tags"]) > 5
    for entity in record["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]
        assert entity["type"] in {"PER", "LOC", "ORG", "MISC"} and 0 < entity["score"] <= 1

    transformers = pytest.importorskip("transformers")
    from bertforge.tasks.ner import BertForTokenClassification
    from bertforge.tokenizer import BertTokenizer

    theirs = transformers.BertForTokenClassification.from_pretrained(run / "final").eval()
    ours = BertForTokenClassification.from_pretrained(run / "final").eval()
    tokenizer = BertTokenizer.from_pretrained(run / "final")
    batch = tokenizer([text, text[:20]], padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()  # padded positions carry no prediction
    with torch.no_grad():
        reference, mine = theirs(**batch).logits[real], ours(**batch).logits[real]
    torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-4)
    assert torch.equal(mine.argmax(-1), reference.argmax(-1))
