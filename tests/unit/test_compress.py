"""Compression: int8 quantization (its directory, sizes, predictions near fp32) and distillation
(the loss terms against hand computations, the layer map, a short run whose student is an
ordinary fine-tuned directory, and the teacher-free baseline)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from bertforge.cli.main import main
from bertforge.errors import BertforgeError
from bertforge.compress.distill import (DistillConfig, DistillTrainConfig, distill, layer_map, masked_mse,
                                        soft_target_loss)
from test_serve_models import make_model_dir


def test_soft_target_loss_is_t_squared_kl():
    student = torch.tensor([[1.0, -0.5, 0.2], [0.0, 2.0, -1.0]])
    teacher = torch.tensor([[0.3, 0.1, -0.4], [1.5, 0.5, 0.0]])
    temperature = 3.0
    p = torch.softmax(teacher / temperature, -1)
    q = torch.softmax(student / temperature, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * temperature ** 2
    assert float(soft_target_loss(student, teacher, temperature)) == pytest.approx(float(expected), rel=1e-5)
    assert float(soft_target_loss(teacher, teacher, temperature)) == pytest.approx(0.0, abs=1e-6)


def test_layer_map_and_masked_mse():
    assert layer_map(4, 12) == [0, 3, 6, 9, 12]
    assert layer_map(2, 6) == [0, 3, 6]
    assert layer_map(4, 4) == [0, 1, 2, 3, 4]
    student = torch.tensor([[[1.0], [2.0], [9.0]]])
    teacher = torch.tensor([[[0.0], [0.0], [0.0]]])
    weights = torch.tensor([[[1.0], [1.0], [0.0]]])  # the third token is padding
    assert float(masked_mse(student, teacher, weights)) == pytest.approx(2.5)


def test_distill_config_checks_itself(tmp_path):
    base = dict(teacher=tmp_path, train=tmp_path, dev=tmp_path, out=tmp_path)
    with pytest.raises(BertforgeError, match="classify only"):
        DistillConfig(**base, task="ner")
    with pytest.raises(BertforgeError, match="unknown student preset"):
        DistillConfig(**base, student_preset="huge")
    with pytest.raises(BertforgeError, match="alpha"):
        DistillConfig(**base, alpha=1.5)
    with pytest.raises(BertforgeError, match="temperature"):
        DistillConfig(**base, temperature=0)


def _classification_files(directory):
    rng = random.Random(0)
    good = ["the film is good", "a great film", "very good and great", "the film is very great"]
    bad = ["the film is bad", "a dull film", "not good and dull", "very bad"]
    paths = []
    for name, count in (("train", 64), ("dev", 16)):
        lines = ["sentence\tlabel"]
        for _ in range(count):
            label = rng.choice(["positive", "negative"])
            lines.append(f"{rng.choice(good if label == 'positive' else bad)}\t{label}")
        path = directory / f"{name}.tsv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


@pytest.mark.parametrize("use_teacher, extra", [(True, ["--hidden-weight", "1", "--attention-weight", "1"]),
                                                (False, [])])
def test_distill_writes_an_ordinary_model_directory(tmp_path, capsys, use_teacher, extra):
    teacher = make_model_dir(tmp_path / "teacher", "classify")
    train, dev = _classification_files(tmp_path)
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher), "--student-preset", "tiny", "--train", str(train), "--dev", str(dev),
            "--out", str(out), "trainer.max_steps=4", "trainer.batch_size=16", "trainer.progress=false", *extra]
    if not use_teacher:
        args.append("--no-use-teacher")
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["use_teacher"] is use_teacher and summary["steps"] == 4 and 0 <= summary["dev"]["accuracy"] <= 1
    config = json.loads((out / "final/config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["distillation"]["use_teacher"] is use_teacher and config["finetuning"]["task"] == "classify"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert set(train_records[-1]) >= ({"soft_loss", "hard_loss", "hidden_loss", "attention_loss"} if use_teacher
                                      else {"hard_loss"})
    assert all(math.isfinite(r["loss"]) for r in train_records)
    assert main(["predict", "--model", str(out / "final"), "the film is good"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("negative", "positive")


def test_same_seed_same_student(tmp_path):
    teacher = make_model_dir(tmp_path / "teacher", "classify")
    train, dev = _classification_files(tmp_path)
    weights = []
    for run in ("a", "b"):
        distill(DistillConfig(teacher=teacher, train=train, dev=dev, out=tmp_path / run, student_preset="tiny",
                              trainer=DistillTrainConfig(max_steps=2, batch_size=8, progress=False)))
        from safetensors.torch import load_file
        weights.append(load_file(tmp_path / run / "final/model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_onnx_quantize_writes_an_int8_graph_that_predicts_like_fp32(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="quantization runs through onnxruntime")
    pytest.importorskip("onnx", reason="quantization exports to ONNX first")
    from bertforge.tasks.loading import load_model

    directory = make_model_dir(tmp_path / "classify", "classify")
    out = tmp_path / "int8"
    assert main(["quantize", "--model", str(directory), "--out", str(out), "--method", "onnx"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quantized_matmuls"] >= 2 * 4  # query-key-value (fused), output and two feed-forward per layer
    assert report["int8_bytes"] < 0.5 * report["fp32_bytes"]
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.onnx", "model.safetensors",
                                                           "tokenizer_config.json", "vocab.txt"]
    assert json.loads((out / "config.json").read_text())["quantization"]["weight_type"] == "QInt8"
    from bertforge.export.onnx import export_onnx
    export_onnx(directory)
    fp32, int8 = load_model(directory, backend="onnx"), load_model(out, backend="onnx")
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, fp32.config.vocab_size, (8, 20), generator=generator)
    full = torch.ones_like(input_ids)
    expected = fp32.model(input_ids, torch.zeros_like(input_ids), full).logits
    got = int8.model(input_ids, torch.zeros_like(input_ids), full).logits
    assert float((expected - got).abs().max()) < 0.05  # int8 rounding, not a different model
    assert main(["predict", "--model", str(out), "--backend", "onnx", "the film is good"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("negative", "positive")
    # The default backend (auto) runs the int8 graph of a quantized directory; torch runs the
    # fp32 weights kept beside it, which transformers loads with the source's logits.
    assert load_model(out, backend="auto").backend == "onnx"
    from bertforge.serve.engine import Engine
    assert Engine(out).backend == "onnx" and Engine(out).endpoints == ["classify", "embed"]
    assert Engine(out, backend="torch").endpoints == ["classify", "embed", "attention"]
    import transformers
    source, reference = load_model(directory), transformers.BertForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        ours = source.model(input_ids, torch.zeros_like(input_ids), full).logits
        theirs = reference(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids), attention_mask=full).logits
    assert float((ours - theirs).abs().max()) < 1e-4
    assert main(["quantize", "--model", str(directory), "--out", str(directory)]) == 2
    assert "must differ" in capsys.readouterr().err
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")), [])


def test_distill_options_are_the_library_config(capsys):
    """`bertforge distill` takes DistillConfig itself (no copied fields); help from its docstrings."""
    from bertforge.cli.compress import COMMANDS

    command = next(command for command in COMMANDS if command.words == ("distill",))
    assert command.options is DistillConfig
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    help_text = capsys.readouterr().out
    assert "--alpha X" in help_text and "Weight of the soft-target KL" in help_text
    assert main(["distill", "--teacher", "t", "--dev", "d", "--out", "o"]) == 2
    assert "pass --train" in capsys.readouterr().err


def test_distill_resumes_bit_exact_and_keeps_the_best(tmp_path, capsys):
    """Distillation runs through the Trainer: with the hidden-state projections (the objective's
    own parameters) it resumes to the same student; the kept student is the best evaluation's."""
    import shutil

    from safetensors.torch import load_file

    from bertforge.train.checkpoint import checkpoint_dirs, latest_checkpoint

    teacher = make_model_dir(tmp_path / "teacher", "classify")
    train, dev = _classification_files(tmp_path)

    def run(out, *extra):
        args = ["distill", "--teacher", str(teacher), "--student-preset", "tiny", "--train", str(train),
                "--dev", str(dev), "--out", str(out), "--hidden-weight", "1", "trainer.max_steps=6",
                "trainer.batch_size=8", "trainer.eval_every=2", "trainer.progress=false",
                "trainer.max_grad_norm=0.5", "trainer.tensorboard=false", *extra]
        assert main(args) == 0
        return json.loads(capsys.readouterr().out)

    straight = run(tmp_path / "straight")
    run(tmp_path / "resumed", "trainer.save_every=2")
    for path in checkpoint_dirs(tmp_path / "resumed"):
        if path.name != "step-2":
            shutil.rmtree(path)
    resumed = run(tmp_path / "resumed", "trainer.resume=true")
    assert resumed["steps"] == straight["steps"] == 6 and resumed["best_step"] == straight["best_step"]
    assert resumed["dev"] == straight["dev"]
    a = load_file(latest_checkpoint(tmp_path / "straight") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "resumed") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)

    results = json.loads((tmp_path / "straight/results.json").read_text())
    assert results["options"]["trainer"]["max_grad_norm"] == 0.5  # clipping is the trainer's setting
    records = [json.loads(line) for line in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evaluations] == [2, 4, 6]
    best = max(evaluations, key=lambda r: (r["dev_accuracy"], -r["step"]))  # the first of equals
    assert straight["best_step"] == best["step"] and straight["dev"]["accuracy"] == best["dev_accuracy"]
    kept = load_file(tmp_path / "straight/final/model.safetensors")
    assert not any(".projections" in key or "trainable" in key for key in kept)  # a plain student
    kept = load_file(tmp_path / "resumed/final/model.safetensors")  # checkpoints at steps 2, 4 and 6
    at_best = load_file(tmp_path / f"resumed/checkpoints/step-{resumed['best_step']}/model.safetensors")
    assert kept.keys() == at_best.keys() and all(torch.equal(kept[key], at_best[key]) for key in kept)


def test_distill_takes_the_trainers_precision_and_accumulation(tmp_path):
    teacher = make_model_dir(tmp_path / "teacher", "classify")
    train, dev = _classification_files(tmp_path)
    trainer = DistillTrainConfig(max_steps=2, batch_size=8, micro_batch_size=4, precision="bf16", progress=False,
                                 tensorboard=False, log_every=1)
    summary = distill(DistillConfig(teacher=teacher, train=train, dev=dev, out=tmp_path / "out", student_preset="tiny",
                                    hidden_weight=1.0, attention_weight=1.0, trainer=trainer))
    assert summary["steps"] == 2 and summary["options"]["trainer"]["precision"] == "bf16"
    records = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert len(train_records) == 2 and all(math.isfinite(r["loss"]) for r in train_records)
    assert set(train_records[-1]) >= {"soft_loss", "hard_loss", "hidden_loss", "attention_loss"}


def test_torch_quantize_marks_the_fp32_weights_and_the_loader_runs_them_as_int8(tmp_path, capsys):
    """--method torch (the default): the directory holds the fp32 weights and a quantization
    record; load_model builds the int8 model from them (every Linear int8, logits within int8
    rounding of fp32 on the fast paths and the padded one); transformers loads the
    fp32 model; quantizing it again is refused."""
    from bertforge.model.bert import set_fast_paths
    from bertforge.tasks.loading import load_model

    directory = make_model_dir(tmp_path / "classify", "classify")
    out = tmp_path / "int8"
    assert main(["quantize", "--model", str(directory), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "torch"
    assert report["int8_bytes"] < report["fp32_bytes"]
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.safetensors",
                                                           "tokenizer_config.json", "vocab.txt"]
    record = json.loads((out / "config.json").read_text())["quantization"]
    assert record["method"] == "torch dynamic int8" and record["per_channel"] is True
    fp32, int8 = load_model(directory), load_model(out)
    assert int8.backend == "torch"
    # Every Linear is int8 but the feed-forward output projections (the default, fp32_ffn_output).
    left = [name for name, module in int8.model.named_modules() if isinstance(module, torch.nn.Linear)]
    assert left and all(name.endswith("feed_forward.output") for name in left)
    assert record["fp32_ffn_output"] is True and report["quantized_linears"] == report_linears(fp32.model) - len(left)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, fp32.config.vocab_size, (8, 20), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[2:, 15:] = 0
    with torch.inference_mode():
        expected = fp32.model(input_ids, torch.zeros_like(input_ids), mask).logits
        got = int8.model(input_ids, torch.zeros_like(input_ids), mask).logits
        padded = set_fast_paths(int8.model, False)(input_ids, torch.zeros_like(input_ids), mask).logits
    assert 0 < float((expected - got).abs().max()) < 0.05  # int8 rounding, not a different model
    # The padded path rounds differently (dynamic activation scales come from each tensor's
    # range, padding included) but is as close to fp32.
    assert float((expected - padded).abs().max()) < 0.05
    assert main(["predict", "--model", str(out), "the film is good"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("negative", "positive")
    import transformers
    theirs = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        reference = theirs(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids), attention_mask=mask).logits
    assert float((expected - reference).abs().max()) < 1e-4
    assert main(["quantize", "--model", str(out), "--out", str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err


def test_int8_split_of_the_fused_projection_gives_the_same_queries_keys_and_values():
    from bertforge.config import BertConfig
    from bertforge.model.layers import SelfAttention

    attention = SelfAttention(BertConfig.from_preset("tiny", vocab_size=100)).eval()
    x = torch.randn(5, attention.qkv.in_features)
    before = attention.query_projection(x), attention.key_value_projection(x)
    attention.split_fused_projection()
    assert attention.split_parts is not None
    torch.testing.assert_close(attention.query_projection(x), before[0])
    torch.testing.assert_close(attention.key_value_projection(x), before[1])
    torch.testing.assert_close(torch.cat([attention.query_projection(x), attention.key_value_projection(x)], -1),
                               attention.qkv(x))


def report_linears(model: torch.nn.Module) -> int:
    return sum(1 for module in model.modules() if isinstance(module, torch.nn.Linear))


def test_torch_quantize_all_linears_when_asked(tmp_path, capsys):
    from bertforge.tasks.loading import load_model

    directory = make_model_dir(tmp_path / "classify", "classify")
    out = tmp_path / "int8-all"
    assert main(["quantize", "--model", str(directory), "--out", str(out), "--no-fp32-ffn-output"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quantized_linears"] == report_linears(load_model(directory).model)
    assert not any(isinstance(module, torch.nn.Linear) for module in load_model(out).model.modules())
