"""The pretraining recipe's one typed config tree: every section typed, every key checked before
anything is written, max_seq_length checked against the model, one masking config, and the
`data prepare` CLI generated from PrepareConfig."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from bertforge.cli.command import field_docs, resolve_options
from bertforge.cli.main import available_commands, build_parser, main
from bertforge.config import BertConfigChanges, to_plain
from bertforge.data.masking import MaskingConfig
from bertforge.data.prepare import PrepareConfig, PrepareSettings
from bertforge.errors import BertforgeError
from bertforge.train.recipe import DataSection, PretrainConfig, check_inputs

PARSER = build_parser(available_commands())


def options_of(*argv: str):
    namespace = PARSER.parse_args(list(argv))
    return resolve_options(namespace._command, namespace)


def pretrain_config(*overrides: str) -> PretrainConfig:
    from bertforge.cli.pretrain import resolve

    return resolve(options_of("pretrain", *overrides))


def test_no_section_is_an_untyped_dict():
    def walk(cls, where):
        for f in dataclasses.fields(cls):
            tp = cls.__dataclass_fields__[f.name].type
            assert "dict[str, Any]" not in str(tp), f"{where}.{f.name}"
            value = getattr(cls(), f.name)
            if dataclasses.is_dataclass(value):
                walk(type(value), f"{where}.{f.name}")

    walk(PretrainConfig, "pretrain")


def test_max_seq_length_has_one_default_and_reaches_the_preparation(monkeypatch, tmp_path):
    assert PrepareSettings().max_seq_length == PrepareConfig(inputs=["x"], vocab="v", out="o").max_seq_length
    config = pretrain_config("--run-dir", str(tmp_path / "run"), "data.inputs=[corpus.txt]", "data.vocab=vocab.txt",
                             "data.prepare.max_seq_length=64", "data.masking.masked_lm_prob=0.3")
    assert isinstance(config.data.prepare, PrepareSettings) and config.data.prepare.max_seq_length == 64
    seen = {}
    from bertforge.data import prepare as prepare_module
    from bertforge.train import recipe

    monkeypatch.setattr(prepare_module, "prepare_corpus", lambda prepared, progress: seen.update(config=prepared))
    recipe.prepare_data(config, recipe_context())
    prepared = seen["config"]
    assert isinstance(prepared, PrepareConfig) and prepared.max_seq_length == 64
    # One masking config: the loader's and the preparation's are the same object.
    assert prepared.masking is config.data.masking and prepared.masking.masked_lm_prob == 0.3
    assert prepared.settings()["masked_lm_prob"] == 0.3


def recipe_context():
    from bertforge.train.distributed import Context

    return Context()


def test_max_seq_length_over_the_position_embeddings_fails_naming_the_setting(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(BertforgeError, match=r"data\.prepare\.max_seq_length is 1024, more than the model's "
                                             r"max_position_embeddings \(512\)"):
        pretrain_config("--run-dir", str(run_dir), "data.prepare.max_seq_length=1024")
    with pytest.raises(BertforgeError, match="max_position_embeddings"):
        pretrain_config("data.prepare.max_seq_length=128", "model.changes.max_position_embeddings=64")
    assert pretrain_config("data.prepare.max_seq_length=1024",
                           "model.changes.max_position_embeddings=1024").data.prepare.max_seq_length == 1024
    assert not run_dir.exists()


def test_max_seq_length_is_checked_against_init_from_and_prepared_data(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1,
                                                        "num_attention_heads": 2, "intermediate_size": 37,
                                                        "max_position_embeddings": 64}))
    config = pretrain_config("--run-dir", str(tmp_path / "run"), f"model.init_from={checkpoint}",
                             "data.inputs=[corpus.txt]")
    with pytest.raises(BertforgeError, match=r"data\.prepare\.max_seq_length is 128, .*\(64\)"):
        check_inputs(config)
    check_inputs(dataclasses.replace(config, data=DataSection(inputs=["corpus.txt"],
                                                              prepare=PrepareSettings(max_seq_length=64))))
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    from bertforge.data.shards import FORMAT, FORMAT_VERSION

    (prepared / "manifest.json").write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION,
                                                        "max_seq_length": 256}))
    config = pretrain_config(f"data.prepared={prepared}", "model.preset=tiny")
    with pytest.raises(BertforgeError, match=r"the max_seq_length of .*prepared is 256, .*\(128\)"):
        check_inputs(dataclasses.replace(config, model=dataclasses.replace(
            config.model, changes=BertConfigChanges(max_position_embeddings=128))))


@pytest.mark.parametrize("override, message", [
    ("data.prepare.max_seq_lenth=64", "unknown config key 'data.prepare.max_seq_lenth'"),
    ("data.prepare.masked_lm_prob=0.2", "unknown config key 'data.prepare.masked_lm_prob'"),
    ("data.masking.masked_lm_prob=1.5", "data.masking.masked_lm_prob must be in (0, 1)"),
    ("model.changes.hiden_size=64", "unknown config key 'model.changes.hiden_size'"),
    ("model.changes.hidden_size=lots", "model.changes.hidden_size: expected int"),
    ("data.prepare.mode=xlnet", "data.prepare.mode: expected one of"),
])
def test_bad_keys_fail_before_anything_is_written(tmp_path, capsys, override, message):
    run_dir = tmp_path / "run"
    assert main(["pretrain", "--run-dir", str(run_dir), override]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error, error
    assert not run_dir.exists()


def test_model_changes_are_typed_and_written_without_the_unset_fields():
    config = pretrain_config("data.prepared=somewhere", "model.changes.hidden_dropout_prob=0",
                             "model.changes.sparse_prediction=false")
    assert config.model.changes.as_dict() == {"hidden_dropout_prob": 0.0, "sparse_prediction": False}
    assert to_plain(config)["model"]["changes"] == {"hidden_dropout_prob": 0.0, "sparse_prediction": False}
    assert config.model.bert_config(vocab_size=100).hidden_dropout_prob == 0.0


def test_builtin_defaults_live_in_pretrain_config():
    builtin = pretrain_config()
    assert builtin.data.prepare.eval_fraction == 0.05 and builtin.model.preset == "tiny"
    assert builtin.train.precision == "auto"
    own = pretrain_config("data.inputs=[corpus.txt]")
    assert own.data.prepare.eval_fraction == PrepareSettings().eval_fraction and own.model.preset == "mini"


def test_data_prepare_options_are_prepare_config_plus_quiet():
    from bertforge.cli.data import DataPrepareOptions

    ours = {f.name for f in dataclasses.fields(DataPrepareOptions)}
    assert ours == {f.name for f in dataclasses.fields(PrepareConfig)} | {"quiet"}
    options = options_of("data", "prepare", "--input", "a.txt", "b.txt", "--vocab", "v.txt", "--out", "out",
                         "--max-seq-length", "64", "--static-masks", "--masking.masked-lm-prob", "0.2",
                         "--masking.max-predictions-per-seq", "9", "seed=3")
    assert options.inputs == ["a.txt", "b.txt"] and options.max_seq_length == 64 and options.static_masks
    assert options.masking == MaskingConfig(masked_lm_prob=0.2, max_predictions_per_seq=9) and options.seed == 3


def test_data_prepare_help_comes_from_the_library_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert field_docs(PrepareConfig)["max_seq_length"].startswith("Tokens per instance")
    assert "--max-seq-length N Tokens per instance, [CLS] and [SEP] included" in text and "(default: 128)" in text
    assert "--masking.masked-lm-prob X Fraction of the maskable tokens to predict (default: 0.15)" in text


def test_a_missing_required_option_names_its_flag(capsys):
    assert main(["data", "prepare", "--input", "a.txt", "--out", "o"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no vocab: pass --vocab")


def test_static_masks_keep_the_flat_settings_hash_and_add_only_changed_masking():
    base = PrepareConfig(inputs=["x"], vocab="v", out="o", static_masks=True)
    assert list(base.settings()) == ["lowercase", "mode", "max_seq_length", "short_seq_prob", "layout", "text_field",
                                     "eval_fraction", "whole_word_mask", "masking", "dupe_factor", "masked_lm_prob",
                                     "max_predictions_per_seq", "seed", "chunk_mb"]
    assert base.settings()["masking"] == "static"
    changed = dataclasses.replace(base, masking=MaskingConfig(mask_token_prob=0.9))
    assert changed.settings()["masking.mask_token_prob"] == 0.9
    dynamic = dataclasses.replace(changed, static_masks=False)
    assert "masking.mask_token_prob" not in dynamic.settings()


def test_preparing_data_does_not_import_the_model(tmp_path):
    import subprocess

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat",
                                                   "on", "mat", "."]) + "\n")
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat.\nthe mat sat.\n\non the cat.\nthe cat.\n" * 20)
    code = ("import sys; from bertforge.data.prepare import PrepareConfig, prepare_corpus; "
            f"prepare_corpus(PrepareConfig(inputs=['{tmp_path / 'corpus.txt'}'], vocab='{tmp_path / 'vocab.txt'}', "
            f"out='{tmp_path / 'out'}', workers=1, eval_fraction=0.2), progress=False); "
            "print(sorted(m for m in sys.modules if m.startswith('bertforge.model') or m == 'torch'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").exists() and result.stdout.strip() == "[]"


def test_held_out_masking_stays_at_bert_rate_whatever_the_training_rate(tmp_path):
    """Training at 40% masks 40% of the tokens; the held-out batches mask 15% (eval_masked_lm_prob)."""
    from bertforge.data import PretrainingDataset, prepare_corpus
    from bertforge.train import distributed
    from bertforge.train.recipe import _batches

    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "green", "house", "walk", "near"]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."]
                                                 + words))
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(40)) + "." for i in range(200)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(lines) + "\n")
    out = tmp_path / "data"
    prepare_corpus(PrepareConfig(inputs=[str(tmp_path / "corpus.txt")], vocab=str(tmp_path / "vocab.txt"),
                                 out=str(out), mode="mlm", max_seq_length=64, eval_fraction=0.2, workers=1),
                   progress=False)
    config = pretrain_config(f"data.prepared={out}", "data.masking.masked_lm_prob=0.4", "train.batch_size=16")
    assert config.data.eval_masked_lm_prob == 0.15
    batches, eval_batches = _batches(config, distributed.setup("cpu"), PretrainingDataset(out, split="train"),
                                     PretrainingDataset(out, split="eval"))

    def rate(loader) -> float:
        predicted = real = 0
        for batch in loader:
            predicted += int((batch["labels"] != -100).sum())
            real += int(batch["attention_mask"].sum()) - 2 * batch["attention_mask"].shape[0]
        return predicted / real

    assert rate(batches) == pytest.approx(0.4, abs=0.03)
    assert rate(eval_batches) == pytest.approx(0.15, abs=0.03)
    with pytest.raises(BertforgeError, match="eval_masked_lm_prob"):
        pretrain_config("data.eval_masked_lm_prob=1.5")
