"""Structured pruning (`bertforge prune`): nothing removed is the identity; the neurons and
layers removed are the least important by the stated scores (against a per-example reference
computed on transformers' model, and on models built so that the answer is known); the pruned
directory loads in transformers with bertforge's logits; bad input is one error line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertforge.cli.main import main
from bertforge.compress.config import PruneConfig
from bertforge.compress.prune import alternate_layers, gradxact_scores, magnitude_scores, prune, scoring_batches
from bertforge.config import BertConfig
from test_serve_models import TOKENS, make_model_dir

transformers = pytest.importorskip("transformers")

GOOD = ["the film is good", "a great film", "very good and great", "the film is very great", "good good film"]
BAD = ["the film is bad", "a dull film", "not good and dull", "very bad", "dull and bad film"]


def _classifier(directory: Path, layers: int = 4, seed: int = 0) -> Path:
    """A random tiny classifier with `layers` layers (its vocab: test_serve_models.TOKENS)."""
    from bertforge.tasks.classify import BertForSequenceClassification
    from bertforge.tokenizer import BertTokenizer

    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in TOKENS), encoding="utf-8")
    config = BertConfig.from_preset("tiny", vocab_size=len(TOKENS), max_position_embeddings=64,
                                    num_hidden_layers=layers, id2label={0: "negative", 1: "positive"}, problem_type="single_label_classification")
    config.extra = {"finetuning": {"task": "classify", "settings": {"max_length": 32}}}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(50)  # a loss that the encoder visibly moves
    model.save_pretrained(directory, tokenizer=BertTokenizer(directory / "vocab.txt", lowercase=True))
    return directory


def _train_file(directory: Path, rows: int = 48) -> Path:
    rng = random.Random(0)
    lines = ["sentence\tlabel"]
    for _ in range(rows):
        label = rng.choice(["positive", "negative"])
        lines.append(f"{rng.choice(GOOD if label == 'positive' else BAD)}\t{label}")
    path = directory / "train.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, len(TOKENS), (4, 12), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[1, 7:] = 0
    mask[3, 4:] = 0
    return {"input_ids": input_ids, "token_type_ids": torch.zeros_like(input_ids), "attention_mask": mask}


def _logits(directory: Path) -> torch.Tensor:
    from bertforge.tasks.loading import load_model

    with torch.no_grad():
        return load_model(directory).model(**_inputs()).logits


def _hf_logits(directory: Path) -> torch.Tensor:
    model = transformers.BertForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(**_inputs()).logits


def _loaded(directory: Path):
    from bertforge.tasks.loading import load_model

    return load_model(directory)


def _batches(directory: Path, train: Path, loaded):
    return scoring_batches(loaded.task, loaded.tokenizer, loaded.config, loaded.settings, train, 100, 16, 0)


def test_nothing_removed_is_the_identity(tmp_path):
    source = _classifier(tmp_path / "model")
    train = _train_file(tmp_path)
    for name, options in (("none", {}), ("all", {"intermediate_size": 512, "layers": 4}),
                          ("listed", {"keep_layers": [0, 1, 2, 3], "keep_ffn": 1.0})):
        out = tmp_path / name
        summary = prune(PruneConfig(model=source, out=out, task_data=train, **options))
        assert summary["parameters"]["from"] == summary["parameters"]["to"]
        before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
        assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
        assert torch.equal(_logits(source), _logits(out))
        assert json.loads((out / "config.json").read_text())["pruning"]["kept_layers"] == [0, 1, 2, 3]


def _reference_gradxact(directory: Path, batches) -> torch.Tensor:
    """Per example, on transformers' model: |sum over real tokens of a * dL/da| at each
    intermediate neuron (after the GELU), averaged over examples. An independent implementation:
    another model's code, one example at a time, no padding at all."""
    model = transformers.BertForSequenceClassification.from_pretrained(directory).eval()
    layers = model.bert.encoder.layer
    totals = torch.zeros(len(layers), model.config.intermediate_size, dtype=torch.float64)
    count = 0
    for batch in batches:
        for row in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][row].sum())
            activations = []
            handles = [layer.intermediate.register_forward_hook(lambda m, i, o: activations.append(o))
                       for layer in layers]
            output = model(input_ids=batch["input_ids"][row:row + 1, :length],
                           token_type_ids=batch["token_type_ids"][row:row + 1, :length],
                           attention_mask=batch["attention_mask"][row:row + 1, :length])
            for handle in handles:
                handle.remove()
            loss = torch.nn.functional.cross_entropy(output.logits, batch["labels"][row:row + 1])
            grads = torch.autograd.grad(loss, activations)
            for index, (a, g) in enumerate(zip(activations, grads)):
                totals[index] += (a * g).sum(dim=(0, 1)).abs().double()
            count += 1
    return (totals / count).float()


def test_gradxact_is_the_per_example_taylor_score_and_the_lowest_are_pruned(tmp_path):
    source = _classifier(tmp_path / "model")
    train = _train_file(tmp_path)
    loaded = _loaded(source)
    batches = _batches(source, train, loaded)
    ours = gradxact_scores(loaded.task, loaded.model, batches)
    reference = _reference_gradxact(source, batches)
    assert ours.shape == (4, 512)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-7)
    keep = 200
    prune(PruneConfig(model=source, out=tmp_path / "pruned", task_data=train, intermediate_size=keep, batches=100,
                      batch_size=16))
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "pruned" / "model.safetensors")
    for layer in range(4):
        wanted = reference[layer].topk(keep).indices.sort().values
        prefix = f"bert.encoder.layer.{layer}."
        assert torch.equal(after[prefix + "intermediate.dense.weight"],
                           before[prefix + "intermediate.dense.weight"][wanted])
        assert torch.equal(after[prefix + "output.dense.weight"], before[prefix + "output.dense.weight"][:, wanted])
        assert torch.equal(after[prefix + "output.dense.bias"], before[prefix + "output.dense.bias"])
        # every neuron removed scores no higher than every neuron kept
        removed = torch.ones(512, dtype=torch.bool)
        removed[wanted] = False
        assert reference[layer][removed].max() <= reference[layer][wanted].min() * (1 + 1e-3)


def _silence(model, layers: list[int], neurons: list[int]) -> None:
    """Layers `layers` become the identity (attention and feed-forward add nothing; post-LN of an
    already normalized input); neurons `neurons` of every layer write nothing."""
    with torch.no_grad():
        for index, layer in enumerate(model.bert.encoder.layers):
            layer.feed_forward.output.weight[:, neurons] = 0
            if index in layers:
                for linear in (layer.attention.output, layer.feed_forward.output):
                    linear.weight.zero_()
                    linear.bias.zero_()


def _trained_with_silenced(source: Path, train: Path, layers: list[int], neurons: list[int]) -> None:
    """Train the classifier at `source` on `train` with `layers` held at the identity and
    `neurons` held silent, and save it: the other layers and neurons then carry what it learned."""
    from bertforge.tasks.classify import BertForSequenceClassification
    from bertforge.tokenizer import BertTokenizer

    loaded = _loaded(source)
    batches = _batches(source, train, loaded)
    model = BertForSequenceClassification.from_pretrained(source).train()
    _silence(model, layers, neurons)
    for index in layers:
        model.bert.encoder.layers[index].requires_grad_(False)
    optimizer = torch.optim.Adam([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-3)
    for _ in range(10):
        for batch in batches:
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()
            _silence(model, layers, neurons)
    model.save_pretrained(source, tokenizer=BertTokenizer(source / "vocab.txt", lowercase=True))


@pytest.mark.parametrize("score", ["gradxact", "magnitude"])
def test_known_dead_neurons_and_identity_layers_go_first(tmp_path, score):
    source = _classifier(tmp_path / "model")
    train = _train_file(tmp_path)
    dead = list(range(0, 512, 4))  # 128 neurons that write nothing, in every layer
    _trained_with_silenced(source, train, [1, 2], dead)
    prune(PruneConfig(model=source, out=tmp_path / "pruned", task_data=train, intermediate_size=384, layers=2,
                      score=score))
    record = json.loads((tmp_path / "pruned" / "config.json").read_text())["pruning"]
    assert record["kept_layers"] == [0, 3]
    first_step = record["layer_trace"][0]["skipped_loss"]
    skipped = {int(index): loss for index, loss in first_step.items()}
    assert max(skipped[1], skipped[2]) < min(skipped[0], skipped[3])  # only the real layers learned the task
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "pruned" / "model.safetensors")
    alive = torch.tensor([index for index in range(512) if index not in dead])
    for new, old in ((0, 0), (1, 3)):
        assert torch.equal(after[f"bert.encoder.layer.{new}.intermediate.dense.weight"],
                           before[f"bert.encoder.layer.{old}.intermediate.dense.weight"][alive])


def test_layer_choice_trace_matches_skipping_layers_in_transformers(tmp_path):
    """The loss of each candidate skip in the first greedy step, recomputed by deleting the
    layer from transformers' model."""
    source = _classifier(tmp_path / "model")
    train = _train_file(tmp_path)
    prune(PruneConfig(model=source, out=tmp_path / "pruned", task_data=train, layers=3, batches=100, batch_size=16))
    trace = json.loads((tmp_path / "pruned" / "config.json").read_text())["pruning"]["layer_trace"]
    loaded = _loaded(source)
    batches = _batches(source, train, loaded)
    for skipped in range(4):
        model = transformers.BertForSequenceClassification.from_pretrained(source).eval()
        model.bert.encoder.layer = torch.nn.ModuleList(
            layer for index, layer in enumerate(model.bert.encoder.layer) if index != skipped)
        total, items = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                logits = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                               attention_mask=batch["attention_mask"]).logits
                total += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
                items += len(batch["labels"])
        assert trace[0]["skipped_loss"][str(skipped)] == pytest.approx(total / items, rel=1e-4)
    losses = trace[0]["skipped_loss"]
    assert trace[0]["dropped"] == min(range(4), key=lambda index: losses[str(index)])


def test_magnitude_score_is_the_product_of_weight_norms(tmp_path):
    loaded = _loaded(_classifier(tmp_path / "model", layers=2))
    scores = magnitude_scores(loaded.model)
    feed_forward = loaded.model.bert.encoder.layers[1].feed_forward
    expected = feed_forward.intermediate.weight.norm(dim=1) * feed_forward.output.weight.norm(dim=0)
    torch.testing.assert_close(scores[1], expected.detach())


def test_pruned_directory_loads_in_transformers_and_runs_in_bertforge(tmp_path, capsys):
    source = _classifier(tmp_path / "model")
    train = _train_file(tmp_path)
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(source), "--task-data", str(train), "--out", str(out), "--keep-ffn", "0.5",
                 "--layers", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"]["to"] == 3 and summary["intermediate_size"]["to"] == 256
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (3, 256)
    assert config["finetuning"]["task"] == "classify" and config["id2label"] == {"0": "negative", "1": "positive"}
    assert float((_logits(out) - _hf_logits(out)).abs().max()) < 1e-4
    assert main(["predict", "--model", str(out), "the film is good"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("negative", "positive")
    assert main(["evaluate", "--model", str(out), "--data", str(train), "--out", str(tmp_path / "eval.json")]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)


def test_explicit_and_alternate_layers(tmp_path, capsys):
    assert alternate_layers(6, 3) == [0, 2, 4] and alternate_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    assert alternate_layers(4, 4) == [0, 1, 2, 3] and alternate_layers(4, 1) == [0]
    source = _classifier(tmp_path / "model")
    out = tmp_path / "listed"
    # No data needed: explicit layers, magnitude scores.
    assert main(["prune", "--model", str(source), "--out", str(out), "--keep-layers", "0,2",
                 "--intermediate-size", "128", "--score", "magnitude"]) == 0
    capsys.readouterr()
    before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    assert torch.equal(after["bert.encoder.layer.1.attention.self.query.weight"],
                       before["bert.encoder.layer.2.attention.self.query.weight"])
    assert not any(key.startswith("bert.encoder.layer.2.") for key in after)
    assert float((_logits(out) - _hf_logits(out)).abs().max()) < 1e-4
    assert main(["prune", "--model", str(source), "--out", str(tmp_path / "alt"), "--layers", "2",
                 "--layer-choice", "alternate"]) == 0
    assert json.loads((tmp_path / "alt" / "config.json").read_text())["pruning"]["kept_layers"] == [0, 2]


def test_a_pretraining_checkpoint_prunes_by_magnitude_and_keeps_its_heads(tmp_path, capsys):
    source = make_model_dir(tmp_path / "pretraining", "pretraining")
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(source), "--out", str(out), "--keep-ffn", "0.25", "--score", "magnitude",
                 "--layers", "1", "--layer-choice", "alternate"]) == 0
    capsys.readouterr()
    model = transformers.BertForPreTraining.from_pretrained(out).eval()
    from bertforge.model import BertForPreTraining

    ours = BertForPreTraining.from_pretrained(out).eval()
    inputs = _inputs()
    with torch.no_grad():
        theirs_output, ours_output = model(**inputs), ours(**inputs)
    assert float((theirs_output.seq_relationship_logits - ours_output.nsp_logits).abs().max()) < 1e-4
    real = inputs["attention_mask"].bool()  # bertforge leaves padded positions at zero
    assert float((theirs_output.prediction_logits[real] - ours_output.mlm_logits[real]).abs().max()) < 1e-4


def test_distilling_a_pruned_student_matches_the_layers_it_kept():
    from bertforge.compress.distill import pruned_layer_map

    teacher = BertConfig.from_preset("tiny", num_hidden_layers=6)
    student = BertConfig.from_preset("tiny", num_hidden_layers=3)
    student.extra = {"pruning": {"kept_layers": [0, 3, 5], "source_layers": 6}}
    assert pruned_layer_map(student, teacher) == [0, 1, 4, 6]
    assert pruned_layer_map(student, BertConfig.from_preset("tiny", num_hidden_layers=12)) is None
    assert pruned_layer_map(BertConfig.from_preset("tiny", num_hidden_layers=3), teacher) is None


@pytest.mark.parametrize("extra, expected", [
    (["--intermediate-size", "0"], "at least 1"),
    (["--keep-ffn", "0.0001"], "keeps 0 of the 512"),
    (["--keep-ffn", "1.5"], "in (0, 1]"),
    (["--layers", "5"], "has only 4"),
    (["--layers", "0"], "at least 1"),
    (["--keep-layers", "0,4"], "out of range"),
    (["--intermediate-size", "600"], "more than the model's 512"),
    (["--task-data", "MISSING"], "no such file"),
    (["--intermediate-size", "100", "--no-data"], "--task-data"),
    (["--model-is-pretraining"], "no task head"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, extra, expected):
    source = _classifier(tmp_path / "model")
    train = _train_file(tmp_path)
    model = str(source)
    if "--model-is-pretraining" in extra:
        model = str(make_model_dir(tmp_path / "pretraining", "pretraining"))
        extra = ["--intermediate-size", "100"]
    data = ["--task-data", str(train)]
    if "--no-data" in extra:
        extra, data = [item for item in extra if item != "--no-data"], []
    if "MISSING" in extra:
        extra, data = ["--task-data", str(tmp_path / "missing.tsv"), "--intermediate-size", "100"], []
    capsys.readouterr()
    status = main(["prune", "--model", model, "--out", str(tmp_path / "out"), *data, *extra])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert expected in errors[0], errors[0]
    assert not (tmp_path / "out").exists()
