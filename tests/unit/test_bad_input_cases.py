"""Issue 18, points 2 and 3: inputs that used to end in a traceback, or were taken silently, are
one `error: FILE[:LINE]: ...` line with exit status 2; the heads a task model legitimately leaves
out of a checkpoint stay a warning and the model still loads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from bertforge.cli.main import main
from bertforge.config import BertConfig, load_config
from bertforge.errors import BertforgeError

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "the", "a", "##s"] + \
    [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) != "a"]
LONG_TEXT = " ".join(["good film"] * 150)


def tiny_config(**changes) -> BertConfig:
    return BertConfig.from_preset("tiny", vocab_size=len(TOKENS), max_position_embeddings=64, **changes)


def write_vocab(directory: Path, tokens: list[str] = TOKENS) -> Path:
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return directory / "vocab.txt"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny classifier and a tiny pretraining checkpoint (each with its vocab), and a data file."""
    from bertforge.model import BertForPreTraining
    from bertforge.tasks.classify import BertForSequenceClassification

    root = tmp_path_factory.mktemp("bad-input")
    classifier = BertForSequenceClassification(tiny_config(id2label={0: "neg", 1: "pos"}))
    classifier.save_pretrained(root / "clf")
    write_vocab(root / "clf")
    BertForPreTraining(tiny_config()).save_pretrained(root / "mlm")
    write_vocab(root / "mlm")
    (root / "dev.tsv").write_text("text\tlabel\ngood film\tpos\nbad film\tneg\n"
                                  f"{LONG_TEXT}\tpos\n", encoding="utf-8")
    return {"clf": root / "clf", "mlm": root / "mlm", "dev": root / "dev.tsv", "root": root}


def one_error(argv: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one `error:` line and no traceback."""
    code = main([str(item) for item in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, (code, err)
    return errors[0]


def copy_model(source: Path, target: Path, **config_changes) -> Path:
    import shutil

    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


# -- a directory as --config, a file as --model ----------------------------------------------


@pytest.mark.parametrize("command", [["info"], ["predict", "x"], ["evaluate"], ["attention", "x"], ["pretrain"],
                                     ["finetune"], ["data", "prepare"], ["tokenizer", "train"], ["serve"],
                                     ["export", "onnx"], ["quantize"], ["distill"]])
def test_a_directory_as_config(tmp_path, capsys, command):
    message = one_error(command + ["--config", tmp_path], capsys)
    assert message == f"error: {tmp_path}: is a directory, expected a YAML config file"


def _model_file_commands(models: dict[str, Path], tmp_path: Path) -> dict[str, list]:
    file = models["clf"] / "config.json"
    common = ["--train", models["dev"], "--dev", models["dev"]]
    return {
        "evaluate": ["evaluate", "--model", file, "--data", models["dev"], "--out", tmp_path / "eval.json"],
        "predict": ["predict", "--model", file, "good"],
        "serve": ["serve", "--model", file],
        "export": ["export", "onnx", "--model", file, "--out", tmp_path / "model.onnx"],
        "attention": ["attention", "--model", file, "good", "--out", tmp_path / "a.html"],
        "finetune": ["finetune", "--task", "classify", "--model", file, *common, "--out", tmp_path / "run"],
        "distill": ["distill", "--teacher", file, *common, "--out", tmp_path / "student"],
        "pretrain": ["pretrain", "--run-dir", tmp_path / "pretrain", f"model.init_from={file}", "--quiet"],
    }


@pytest.mark.parametrize("command", ["evaluate", "predict", "serve", "export", "attention", "finetune", "distill",
                                     "pretrain"])
def test_a_file_as_model(models, tmp_path, capsys, command):
    message = one_error(_model_file_commands(models, tmp_path)[command], capsys)
    assert message == (f"error: {models['clf'] / 'config.json'}: is a file, expected a model directory "
                       "(the folder that holds config.json)")


def test_a_file_as_model_to_quantize(models, tmp_path, capsys):
    message = one_error(["quantize", "--model", models["clf"] / "config.json", "--out", tmp_path / "q"], capsys)
    assert str(models["clf"] / "config.json") in message


# -- malformed config.json fields ------------------------------------------------------------


@pytest.mark.parametrize("key, value, expected", [
    ("id2label", "positive", "id2label: expected a mapping of label ids to names, got 'positive'"),
    ("id2label", ["neg", "pos"], "id2label: expected a mapping of label ids to names"),
    ("id2label", {"zero": "neg"}, "id2label: key 'zero' is not an integer label id"),
    ("id2label", {"0": ["neg"]}, "id2label: the name of label 0 must be a string"),
    ("label2id", "positive", "label2id: expected a mapping of label names to ids"),
    ("label2id", {"neg": "zero"}, "label2id: the id of label 'neg' must be an integer"),
    ("hidden_size", "abc", "hidden_size: expected an integer, got 'abc'"),
    ("hidden_dropout_prob", "high", "hidden_dropout_prob: expected a number, got 'high'"),
    ("layer_norm_eps", [1], "layer_norm_eps: expected a number"),
    ("pad_token_id", "x", "pad_token_id: expected an integer"),
    ("vocab_size", None, "vocab_size: expected an integer, got None"),
    ("bertforge", 3, "bertforge: expected a mapping"),
    ("finetuning", "classify", "finetuning: expected"),
    ("finetuning", {"task": "classify", "settings": "x"}, "finetuning: expected"),
    ("finetuning", {"task": "classify", "settings": {"max_length": "long"}},
     "finetuning.settings.max_length: expected an integer, got 'long'"),
    ("architectures", "BertForSequenceClassification", "architectures: expected a list of class names"),
])
def test_malformed_config_json_names_the_file_and_key(models, tmp_path, capsys, key, value, expected):
    model = copy_model(models["clf"], tmp_path / "model", **{key: value})
    message = one_error(["predict", "--model", model, "good"], capsys)
    assert message.startswith(f"error: {model / 'config.json'}: {expected}"), message


# -- lengths against max_position_embeddings -------------------------------------------------


def test_attention_max_length_past_the_positions(models, tmp_path, capsys):
    message = one_error(["attention", "--model", models["clf"], LONG_TEXT, "--max-length", "100000",
                         "--out", tmp_path / "a.html"], capsys)
    assert message == "error: --max-length is 100000, more than the model's max_position_embeddings (64); lower it"
    assert not (tmp_path / "a.html").exists()
    # Without --max-length a long text is cut to the model's 64 positions.
    assert main(["attention", "--model", str(models["clf"]), LONG_TEXT, "--out", str(tmp_path / "b.html")]) == 0
    assert "over 64 tokens" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["predict", "evaluate", "finetune", "distill"])
def test_settings_max_length_past_the_positions(models, tmp_path, capsys, command):
    common = ["--train", models["dev"], "--dev", models["dev"]]
    argv = {"predict": ["predict", "--model", models["clf"], LONG_TEXT, "settings.max_length=100000"],
            "evaluate": ["evaluate", "--model", models["clf"], "--data", models["dev"], "--out", tmp_path / "e.json",
                         "settings.max_length=65"],
            "finetune": ["finetune", "--task", "classify", "--model", models["mlm"], *common, "--out", tmp_path / "r",
                         "settings.max_length=100"],
            "distill": ["distill", "--teacher", models["clf"], *common, "--out", tmp_path / "s",
                        "--max-length", "1000"]}[command]
    message = one_error(argv, capsys)
    assert "settings.max_length is " in message and "more than the model's max_position_embeddings (64)" in message


def test_a_default_max_length_is_cut_to_the_positions(models, capsys):
    # settings.max_length defaults to 128; this model has 64 positions, so a long text is cut there.
    assert main(["predict", "--model", str(models["clf"]), LONG_TEXT]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] in ("neg", "pos")

    from bertforge.tasks.loading import load_model
    loaded = load_model(models["clf"])
    assert loaded.settings.max_length == 64
    with pytest.raises(BertforgeError, match=r"settings\.max_length is 65"):
        load_model(models["clf"], settings={"max_length": 65})


# -- YAML type errors name the file and line -------------------------------------------------


def test_yaml_type_error_names_file_and_line(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("# pretraining\nrun_dir: runs/x\n\ndata:\n  inputs: [a.txt]\ntrain:\n  batch_size: abc\n")
    message = one_error(["pretrain", "--config", recipe], capsys)
    assert message == f"error: {recipe}:7: train.batch_size: expected an integer, got 'abc'"
    # The command line wins over the file, and its own bad value is reported without the file.
    message = one_error(["pretrain", "--config", recipe, "train.batch_size=xyz"], capsys)
    assert message == "error: train.batch_size: expected an integer, got 'xyz'"


def test_yaml_unknown_key_and_list_item_lines(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  max_steps: 1\n  bogus: 3\n")
    assert one_error(["pretrain", "--config", recipe], capsys).startswith(
        f"error: {recipe}:3: unknown config key 'train.bogus'")
    recipe.write_text("data:\n  inputs:\n    - a.txt\n    - [1, 2]\n")
    assert one_error(["pretrain", "--config", recipe], capsys) == (
        f"error: {recipe}:4: data.inputs[1]: expected a string, got [1, 2]")


def test_load_config_names_the_line(tmp_path):
    from bertforge.cli.finetune import FinetuneOptions

    recipe = tmp_path / "finetune.yaml"
    recipe.write_text("task: classify\nepochs: many\n")
    with pytest.raises(BertforgeError) as caught:
        load_config(FinetuneOptions, recipe)
    assert str(caught.value) == f"{recipe}:2: epochs: expected a number, got 'many'"


# -- duplicate vocab tokens ------------------------------------------------------------------


def _duplicated(directory: Path) -> Path:
    tokens = TOKENS[:8] + ["good"] + TOKENS[8:]  # "good" on line 6 and again on line 9
    return write_vocab(directory, tokens)


def test_duplicate_vocab_token_names_both_lines(tmp_path):
    from bertforge.tokenizer import BertTokenizer

    vocab = _duplicated(tmp_path)
    with pytest.raises(BertforgeError) as caught:
        BertTokenizer(vocab)
    assert str(caught.value) == (f"{vocab}:9: token 'good' is on line 6 and again on line 9; every token of a "
                                 "vocab must be unique (ids are line numbers)")


@pytest.mark.parametrize("command", ["predict", "data prepare", "finetune"])
def test_duplicate_vocab_token_in_every_command(models, tmp_path, capsys, command):
    model = copy_model(models["clf"], tmp_path / "model")
    vocab = _duplicated(model)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("good film. bad film.\n\nthe film.\n")
    argv = {"predict": ["predict", "--model", model, "good"],
            "data prepare": ["data", "prepare", "--input", corpus, "--vocab", vocab, "--out", tmp_path / "data"],
            "finetune": ["finetune", "--task", "classify", "--model", model, "--train", models["dev"],
                         "--dev", models["dev"], "--out", tmp_path / "run"]}[command]
    message = one_error(argv, capsys)
    assert message.startswith(f"error: {vocab}:9: token 'good' is on line 6 and again on line 9")


# -- the config against the weights ----------------------------------------------------------


def test_fewer_layers_in_the_config_than_in_the_weights(models, tmp_path, capsys):
    model = copy_model(models["mlm"], tmp_path / "model", num_hidden_layers=1)
    message = one_error(["attention", "--model", model, "good", "--out", tmp_path / "a.html"], capsys)
    assert message == (f"error: {model / 'model.safetensors'}: the checkpoint has 2 layers but config.json says "
                       "num_hidden_layers=1: the config disagrees with the weights")


def test_tensors_the_model_has_no_place_for(models, tmp_path):
    from safetensors.torch import load_file, save_file

    from bertforge.model import BertForMaskedLM

    model = copy_model(models["mlm"], tmp_path / "model")
    state = load_file(model / "model.safetensors")
    state["bert.adapter.weight"] = state["bert.pooler.dense.bias"].clone()
    save_file(state, model / "model.safetensors")
    with pytest.raises(BertforgeError, match=r"1 tensor\(s\) that BertForMaskedLM has no place for: "
                                             r"bert\.adapter\.weight"):
        BertForMaskedLM.from_pretrained(model)


def test_heads_a_task_model_leaves_out_stay_a_warning(models, tmp_path):
    import torch

    from bertforge.model import BertModel
    from bertforge.tasks.classify import BertForSequenceClassification
    from bertforge.tasks.qa import BertForQuestionAnswering

    config = tiny_config(id2label={0: "neg", 1: "pos"})
    with pytest.warns(UserWarning, match=r"ignored \(not used by BertForSequenceClassification\): cls\.predictions"):
        classifier = BertForSequenceClassification.from_pretrained(models["mlm"], config=config)
    with pytest.warns(UserWarning, match=r"ignored \(not used by BertForQuestionAnswering\).*bert\.pooler"):
        BertForQuestionAnswering.from_pretrained(models["mlm"])
    BertModel(tiny_config(), add_pooler=False).save_pretrained(tmp_path / "bare")
    with pytest.warns(UserWarning, match=r"initialized fresh.*pooler\.dense"):
        encoder = BertModel.from_pretrained(tmp_path / "bare")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits = classifier(torch.tensor([[2, 5, 3]])).logits
    assert logits.shape == (1, 2) and encoder.config.num_hidden_layers == 2


# -- empty predict text ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_an_empty_predict_text_is_an_error(models, capsys, text):
    message = one_error(["predict", "--model", models["clf"], "good film", "bad", text], capsys)
    assert message == "error: input 3 is empty: give each text some words (blank lines of an --input file are skipped)"


def test_blank_lines_of_an_input_file_are_skipped(models, tmp_path, capsys):
    inputs = tmp_path / "texts.txt"
    inputs.write_text("good film\n\n   \nbad film\n")
    assert main(["predict", "--model", str(models["clf"]), "--input", str(inputs)]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == ["good film", "bad film"]


def test_predict_refuses_an_empty_text_in_an_input_file(models, tmp_path, capsys):
    """An --input record whose text is empty is an error naming the file and line, as an empty
    text on the command line is."""
    inputs = tmp_path / "inputs.tsv"
    inputs.write_text("text\tlabel\ngood film\tpos\n \tneg\n", encoding="utf-8")
    message = one_error(["predict", "--model", models["clf"], "--input", inputs], capsys)
    assert message == f"error: {inputs}:3: the text is empty: nothing to predict from"
