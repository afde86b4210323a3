"""Bad checkpoints give one-line BertforgeErrors that name the file."""

from __future__ import annotations

import json

import pytest
import torch

from bertforge.cli.main import main
from bertforge.config import BertConfig
from bertforge.errors import BertforgeError
from bertforge.model import BertForPreTraining, BertModel


def tiny() -> BertConfig:
    return BertConfig.from_preset("tiny", vocab_size=120, max_position_embeddings=64)


def test_missing_directory(tmp_path):
    with pytest.raises(BertforgeError, match="model directory not found") as caught:
        BertModel.from_pretrained(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_config_that_disagrees_with_weights(tmp_path):
    BertModel(tiny()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 256
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BertforgeError, match="config disagrees with the weights") as caught:
        BertModel.from_pretrained(tmp_path)
    assert "model.safetensors" in str(caught.value) and "\n" not in str(caught.value)


def test_corrupt_weights_and_bad_json(tmp_path):
    BertModel(tiny()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(BertforgeError, match="cannot read weights"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(BertforgeError, match=r"config.json:1: not a valid JSON config"):
        BertModel.from_pretrained(tmp_path)


def test_pickle_checkpoints_load_weights_only(tmp_path):
    model = BertModel(tiny())
    model.save_pretrained(tmp_path)
    from bertforge.convert import to_hf_state_dict
    (tmp_path / "model.safetensors").unlink()
    torch.save(to_hf_state_dict(model), tmp_path / "pytorch_model.bin")
    loaded = BertModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(BertforgeError, match="weights_only"):
        BertModel.from_pretrained(tmp_path)


def test_heads_missing_from_checkpoint_are_initialized_and_named(tmp_path):
    BertModel(tiny()).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"initialized fresh.*mlm\.transform\.weight.*nsp\.weight"):
        model = BertForPreTraining.from_pretrained(tmp_path)
    assert float(model.mlm.bias.abs().max()) == 0.0


def test_missing_encoder_tensor_is_an_error(tmp_path):
    BertModel(tiny()).save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.1.output.dense.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(BertforgeError, match=r"lacks 1 encoder tensor.*encoder\.layers\.1\.feed_forward\.output\.weight"):
        BertModel.from_pretrained(tmp_path)


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    config = tiny()
    data = config.to_dict()
    data["some_future_key"] = {"nested": [1, 2]}
    data["architectures"] = ["BertForMaskedLM"]
    again = BertConfig.from_dict(data)
    assert again.to_dict()["some_future_key"] == {"nested": [1, 2]}
    assert again.to_dict()["architectures"] == ["BertForMaskedLM"]
    assert again.hidden_size == config.hidden_size


@pytest.mark.parametrize("bad", [dict(hidden_size=100, num_attention_heads=3), dict(num_hidden_layers=0),
                                 dict(hidden_dropout_prob=1.5), dict(hidden_act="swishy")])
def test_config_checks_itself(bad):
    with pytest.raises(BertforgeError):
        BertConfig(**bad)


def test_cli_info_and_errors(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "base" in out and "110.1M" in out
    assert main(["info", "--vocab-size", "x"]) == 2
    assert capsys.readouterr().err.strip() == "error: vocab_size: expected an integer, got 'x'"
    assert main(["info", "no_such_key=3"]) == 2
    assert "unknown config key 'no_such_key'" in capsys.readouterr().err


def test_cli_names_a_missing_model_directory_and_a_mismatched_config(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert main(["pretrain", "--run-dir", str(tmp_path / "a"), f"model.init_from={missing}", "--quiet"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: ") and str(missing) in message

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    model_dir = tmp_path / "model"
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=len(vocab), max_position_embeddings=64))
    model.save_pretrained(model_dir)
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = json.loads((model_dir / "config.json").read_text())
    config["hidden_size"], config["num_attention_heads"] = 64, 2
    (model_dir / "config.json").write_text(json.dumps(config))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"abc def ghi. jkl mno {i}. pqr stu vwx." for i in range(40)) + "\n")
    code = main(["pretrain", "--run-dir", str(tmp_path / "b"), f"model.init_from={model_dir}",
                 f"data.inputs=[{corpus}]", "data.prepare.max_seq_length=32", "data.prepare.workers=1",
                 "data.prepare.eval_fraction=0.2", "--quiet", "train.max_steps=1"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, message
    assert "config disagrees with the weights" in message and "model.safetensors" in message
