"""`bertforge compress` end to end on real SST-2 rows: a tiny 4-layer teacher fine-tuned here is
pruned, distilled (the student starting from the pruned teacher) and quantized at two candidate
sizes; OUT/final is a directory `evaluate`, `predict` and `serve` use as it is (PyTorch dynamic
int8, built from its fp32 weights as it loads), and transformers loads (as the fp32 model);
OUT/report.json holds the measurements. One run quantizes through onnxruntime instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertforge.cli.main import main

transformers = pytest.importorskip("transformers")

QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]


def _head(source: Path, target: Path, rows: int) -> Path:
    lines = source.read_text(encoding="utf-8").split("\n")
    target.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def sst2_teacher(tmp_path_factory, data_dir):
    """A tiny classifier (4 layers, bert-base-uncased vocab) fine-tuned on 400 SST-2 rows."""
    from bertforge.config import BertConfig
    from bertforge.model import BertModel
    from bertforge.tokenizer import BertTokenizer

    for name in ("glue/sst2/train.tsv", "glue/sst2/dev.tsv", "vocab/bert-base-uncased-vocab.txt"):
        if not (data_dir / name).exists():
            pytest.skip(f"shared data file missing: {data_dir / name}")
    work = tmp_path_factory.mktemp("compress")
    train = _head(data_dir / "glue/sst2/train.tsv", work / "train.tsv", 400)
    dev = _head(data_dir / "glue/sst2/dev.tsv", work / "dev.tsv", 160)
    tokenizer = BertTokenizer(data_dir / "vocab/bert-base-uncased-vocab.txt", lowercase=True)
    torch.manual_seed(0)
    base = BertModel(BertConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size, num_hidden_layers=4,
                                            max_position_embeddings=128))
    base.save_pretrained(work / "base", tokenizer=tokenizer)
    status = main(["finetune", "--task", "classify", "--model", str(work / "base"), "--train", str(train),
                   "--dev", str(dev), "--out", str(work / "teacher"), "--max-steps", "40", "settings.max_length=64",
                   "trainer.batch_size=32", "trainer.learning_rate=2e-3", "trainer.keep_last=1", *QUIET])
    assert status == 0
    return work, work / "teacher" / "final", train, dev


@pytest.fixture(scope="module")
def compressed(sst2_teacher):
    work, teacher, train, dev = sst2_teacher
    out = work / "compressed"
    status = main(["compress", "--teacher", str(teacher), "--task", "classify", "--train", str(train),
                   "--dev", str(dev), "--out", str(out), "--speedup", "2", "--candidates", "2", "--accuracy-budget", "100", "--quantize", "int8",
                   "--score-batches", "4", "--timing-sentences", "128", "--timing-rounds", "1",
                   "trainer.max_steps=20", "trainer.batch_size=32", "trainer.eval_every=10", *QUIET])
    assert status == 0
    return out, teacher, dev


def test_the_report_measures_teacher_int8_teacher_and_every_candidate(compressed):
    out, teacher, _ = compressed
    report = json.loads((out / "report.json").read_text())
    candidates = report["candidates"]
    assert len(candidates) == 2
    sizes = [candidate["parameters"] for candidate in candidates]
    assert sizes[0] > sizes[1] and report["teacher"]["parameters"] > sizes[0]  # decreasing sizes below the teacher
    for record in [report["teacher"], report["teacher_int8"], *candidates]:
        for key in ("parameters", "weights_bytes", "directory_bytes", "dev_accuracy", "sentences_per_s", "speedup"):
            assert record[key] > 0 or key == "dev_accuracy", (key, record)
        assert 0.0 <= record["dev_accuracy"] <= 1.0
    # int8 matrices; the embeddings (most of this tiny model with a 30,522-token vocab) stay fp32
    assert report["teacher_int8"]["weights_bytes"] < report["teacher"]["weights_bytes"]
    assert report["timing"]["sentences"] == 128 and report["int8_gain"] > 0
    # With a budget of 100 points every candidate is within it: the smallest is chosen.
    assert report["summary"]["chosen"] == candidates[-1]["name"] and report["summary"]["within_budget"]
    assert report["student"]["name"] == candidates[-1]["name"]
    for candidate in candidates:
        root = out / "candidates" / candidate["name"]
        distilled = json.loads((root / "run" / "final" / "config.json").read_text())
        # The student started from the pruned teacher (not random weights) and says so.
        assert distilled["distillation"]["student_init"] == str(root / "pruned")
        assert distilled["pruning"]["kept_layers"] == candidate["kept_layers"]
        assert distilled["num_hidden_layers"] == candidate["layers"] == len(candidate["kept_layers"])
        assert distilled["intermediate_size"] == candidate["intermediate_size"]
        for directory in (root / "pruned", root / "run" / "final", root / "int8"):
            transformers.BertForSequenceClassification.from_pretrained(directory)  # loads


def test_final_is_an_int8_directory_that_evaluate_predict_serve_and_transformers_use(compressed, tmp_path, capsys):
    from bertforge.serve.engine import Engine
    from bertforge.tasks.loading import load_model

    out, _, dev = compressed
    final = out / "final"
    report = json.loads((out / "report.json").read_text())
    assert sorted(path.name for path in final.iterdir()) == ["config.json", "model.safetensors",
                                                             "tokenizer_config.json", "vocab.txt"]
    assert json.loads((final / "config.json").read_text())["quantization"]["method"] == "torch dynamic int8"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(final), "--data", str(dev), "--out", str(tmp_path / "eval.json")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(report["student"]["dev_accuracy"])  # int8, as compress scored it
    assert main(["predict", "--model", str(final), "a gripping , funny film", "dull and long"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and all(record["label"] in ("0", "1") for record in records)
    engine = Engine(final)
    assert engine.backend == "torch" and engine.endpoints == ["classify", "embed", "attention"]
    # transformers loads the fp32 student the int8 model is built from, with bertforge's fp32
    # logits; the int8 model bertforge runs is within int8 rounding of them.
    from bertforge.tasks import get_task

    int8 = load_model(final)
    fp32 = get_task("classify").model_class.from_pretrained(final).eval()
    theirs = transformers.BertForSequenceClassification.from_pretrained(final).eval()
    batch = int8.tokenizer(["a gripping , funny film", "dull"], padding=True, return_tensors="pt")
    inputs = {name: batch[name] for name in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        assert float((fp32(**inputs).logits - theirs(**inputs).logits).abs().max()) < 1e-4
        assert 0 < float((int8.model(**inputs).logits - theirs(**inputs).logits).abs().max()) < 0.1


def test_a_finished_compress_is_not_replaced_without_overwrite(compressed, capsys):
    out, teacher, dev = compressed
    before = (out / "report.json").read_bytes()
    capsys.readouterr()
    status = main(["compress", "--teacher", str(teacher), "--train", str(dev), "--dev", str(dev), "--out", str(out)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "--overwrite" in errors[0], errors
    assert (out / "report.json").read_bytes() == before


def test_augment_and_quantize_auto(sst2_teacher, tmp_path, data_dir, capsys):
    """--augment: the teacher labels the extra lines and the distillation reads them after the
    training rows; --quantize auto: int8 students exactly when the int8 teacher measured faster
    than the fp32 one and within the budget."""
    from bertforge.tasks.finetune import predict

    _, teacher, train, dev = sst2_teacher
    rows = (data_dir / "glue/sst2/train.tsv").read_text(encoding="utf-8").split("\n")[401:521]
    extra = tmp_path / "unlabelled.txt"
    extra.write_text("".join(row.split("\t")[0] + "\n" for row in rows if row.strip()), encoding="utf-8")
    missing = main(["compress", "--teacher", str(teacher), "--train", str(train), "--dev", str(dev),
                    "--out", str(tmp_path / "bad"), "--augment", str(tmp_path / "nope.txt")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert missing == 2 and len(errors) == 1 and "nope.txt" in errors[0], errors
    out = tmp_path / "auto"
    status = main(["compress", "--teacher", str(teacher), "--train", str(train), "--dev", str(dev), "--out", str(out),
                   "--speedup", "2", "--candidates", "1", "--accuracy-budget", "100", "--augment", str(extra),
                   "--score-batches", "2", "--timing-sentences", "64", "--timing-rounds", "1",
                   "trainer.max_steps=5", "trainer.batch_size=32", *QUIET])
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    augmented = [json.loads(line) for line in (out / "augmented-train.jsonl").read_text().splitlines()]
    texts = [line.strip() for line in extra.read_text(encoding="utf-8").splitlines()]
    assert len(augmented) == 400 + len(texts) and [row["text"] for row in augmented[400:]] == texts
    labels = [record["label"] for record in predict(model_dir=teacher, task_name="classify", texts=texts,
                                                    device="cpu", backend="torch")]
    assert [row["label"] for row in augmented[400:]] == labels
    assert report["options"]["augment"] == str(extra) and report["augmented_train"] == str(out / "augmented-train.jsonl")
    pays = report["int8_measured_gain"] > 1.0 and report["teacher_int8"]["dev_accuracy"] >= 0.0
    assert report["students_int8"] == pays and report["int8_gain"] == (report["int8_measured_gain"] if pays else 1.0)
    assert report["student"]["backend"] == "torch"
    assert ("quantization" in json.loads((out / "final" / "config.json").read_text())) == pays


def test_the_onnx_method_runs_its_students_on_onnxruntime(sst2_teacher, tmp_path):
    pytest.importorskip("onnx", reason="--quantize-method onnx exports to ONNX: pip install 'bertforge[onnx]'")
    pytest.importorskip("onnxruntime", reason="--quantize-method onnx runs on onnxruntime")
    _, teacher, train, dev = sst2_teacher
    out = tmp_path / "onnx"
    status = main(["compress", "--teacher", str(teacher), "--train", str(train), "--dev", str(dev), "--out", str(out),
                   "--speedup", "2", "--candidates", "1", "--accuracy-budget", "100", "--quantize", "int8",
                   "--quantize-method", "onnx", "--score-batches", "2", "--timing-sentences", "64",
                   "--timing-rounds", "1", "trainer.max_steps=5", "trainer.batch_size=32", *QUIET])
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["backend"] == report["teacher_int8"]["backend"] == "onnx"
    assert (out / "final" / "model.onnx").is_file()
