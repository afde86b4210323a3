"""Every writing command against its hostile inputs (issue 18): an unwritable output, an output
that already holds a finished result (without --overwrite), the wrong kind of path (a file where
a directory is expected and the reverse, for inputs and outputs), a broken config file, a
broken vocab and broken data rows.

Each case must end with exit status 2, exactly one `error:` line on stderr and no traceback,
and leave every file of the test's world byte-identical (nothing written, nothing replaced).
The commands run in-process (`bertforge.cli.main.main`) on tiny models built once per module;
every case fails before any training, so the whole matrix takes seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

from bertforge.cli.main import main

WORDS = ["the", "a", "film", "is", "good", "bad", "great", "dull", "and", "not", "very", "peter", "went", "to",
         "paris", "berlin", "john", "smith", "lives", "in", "where", "does", "who", ".", ",", "?"]
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]
UNWRITABLE = "/dev/null/out"
READ_ONLY = "/sys/bertforge-out"  # sysfs: no file can be created there, not even by root


def _model_dir(directory: Path, kind: str) -> Path:
    """A random tiny model of `kind` (classify, ner, qa) with its vocab and fine-tuning record."""
    import torch

    from bertforge.config import BertConfig
    from bertforge.tasks.classify import BertForSequenceClassification
    from bertforge.tasks.ner import BertForTokenClassification
    from bertforge.tasks.qa import BertForQuestionAnswering
    from bertforge.tokenizer import BertTokenizer

    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in TOKENS), encoding="utf-8")
    tokenizer = BertTokenizer(directory / "vocab.txt", lowercase=True)
    labels = {"classify": ["negative", "positive"], "ner": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}.get(kind)
    changes: dict = {"max_position_embeddings": 64}
    if labels:
        changes["id2label"] = dict(enumerate(labels))
    if kind == "classify":
        changes["problem_type"] = "single_label_classification"
    config = BertConfig.from_preset("tiny", vocab_size=len(TOKENS), **changes)
    config.extra = {"finetuning": {"task": kind, "settings": {"max_length": 32}}}
    classes = {"classify": BertForSequenceClassification, "ner": BertForTokenClassification,
               "qa": BertForQuestionAnswering}
    torch.manual_seed(0)
    classes[kind](config).save_pretrained(directory, tokenizer=tokenizer)
    return directory


def _copy_model(source: Path, target: Path, **config_changes: object) -> None:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **config_changes}))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Models, data files, finished outputs and wrong-kind paths that every case may point at."""
    from bertforge.data import PrepareConfig, prepare_corpus

    root = tmp_path_factory.mktemp("world")
    for kind in ("classify", "ner", "qa"):
        _model_dir(root / kind, kind)
    shutil.copytree(root / "classify", root / "other-model")
    shutil.copytree(root / "classify", root / "empty-vocab-model")
    _write(root / "empty-vocab-model" / "vocab.txt", "")
    _copy_model(root / "classify", root / "duplicate-vocab-model")
    _write(root / "duplicate-vocab-model" / "vocab.txt", "".join(token + "\n" for token in TOKENS[:-1] + ["the"]))
    _copy_model(root / "classify", root / "id2label-string-model", id2label="positive")
    _copy_model(root / "classify", root / "fewer-layers-model", num_hidden_layers=1)
    _copy_model(root / "classify", root / "encoder-model", architectures=["BertModel"], finetuning=None)
    rows = ["the film is good\tpositive", "a dull film\tnegative", "very good\tpositive", "bad and dull\tnegative"]
    _write(root / "train.tsv", "sentence\tlabel\n" + "\n".join(rows * 4) + "\n")
    _write(root / "dev.tsv", "sentence\tlabel\n" + "\n".join(rows) + "\n")
    _write(root / "bad-rows.tsv", "sentence\tlabel\nthe film is good\tpositive\nno label column here\n")
    _write(root / "bad-rows.conll", "peter B-PER\nwent O\nparis B-LOC extra fields here\n\n")
    _write(root / "bad-rows.json", '{"data": [{"paragraphs": [{"context": "john lives in paris"')
    _write(root / "bad-rows.jsonl", '{"text": "the film is good"}\n{"text": \n')
    corpus = "\n".join(["the film is good and very great .", "peter went to paris .", "john smith lives in berlin .",
                        "", "a dull film , not good .", "who lives in paris ?", "where does john live ?"] * 20)
    _write(root / "corpus.txt", corpus + "\n")
    (root / "binary.txt").write_bytes(b"the film\x00\x01\x02\xff\xfe is good\n")
    _write(root / "vocab.txt", "".join(token + "\n" for token in TOKENS))
    _write(root / "empty-vocab.txt", "")
    _write(root / "bad.yaml", "out: [unclosed\n  key: : :\n")
    _write(root / "unknown-key.yaml", "no_such_option: 1\n")
    _write(root / "a-file.txt", "a file where a directory is expected\n")
    (root / "a-dir").mkdir()
    _write(root / "notes" / "notes.txt", "someone's notes, not a model\n")
    finished = root / "finished-run"
    shutil.copytree(root / "classify", finished / "final")
    _write(finished / "results.json", json.dumps({"dev": {"accuracy": 0.5}}) + "\n")
    _write(finished / "metrics.jsonl", json.dumps({"split": "train", "step": 1, "loss": 1.0}) + "\n")
    _write(root / "checkpointed-run" / "checkpoints" / "step-1" / "COMPLETE", "step 1\n")
    _write(root / "vocab-dir" / "vocab.txt", "".join(token + "\n" for token in TOKENS))
    _write(root / "vocab-dir" / "tokenizer_config.json", "{}\n")
    for name in ("existing.onnx", "existing.json", "existing.jsonl", "existing.html", "existing.png"):
        _write(root / name, f"an earlier result: {name}\n")
    prepare_corpus(PrepareConfig(inputs=[str(root / "corpus.txt")], vocab=str(root / "vocab.txt"),
                                 out=str(root / "prepared"), max_seq_length=32, eval_fraction=0.2, workers=1),
                   progress=False)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with its content's sha256 (directories as "dir")."""
    return {str(path.relative_to(root)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))}


# Each writing command: a function of (world, output) giving a command line that works when the
# output is new, so that a case changes one thing only.
def finetune(w: Path, out: str, **swap: str) -> list[str]:
    args = {"--task": "classify", "--model": str(w / "classify"), "--train": str(w / "train.tsv"),
            "--dev": str(w / "dev.tsv"), "--out": out, **swap}
    return ["finetune", *[item for pair in args.items() for item in pair], "--max-steps", "1", *QUIET]


def distill(w: Path, out: str, **swap: str) -> list[str]:
    args = {"--teacher": str(w / "classify"), "--train": str(w / "train.tsv"), "--dev": str(w / "dev.tsv"),
            "--out": out, **swap}
    return ["distill", *[item for pair in args.items() for item in pair], "--student-preset", "tiny",
            "trainer.max_steps=1", *QUIET]


def quantize(w: Path, out: str, model: str | None = None) -> list[str]:
    return ["quantize", "--model", model or str(w / "classify"), "--out", out]


def export(w: Path, out: str, model: str | None = None) -> list[str]:
    return ["export", "onnx", "--model", model or str(w / "classify"), "--out", out]


def tokenizer(w: Path, out: str, files: str | None = None) -> list[str]:
    return ["tokenizer", "train", "--files", files or str(w / "corpus.txt"), "--vocab-size", "60", "--out", out,
            "--quiet"]


def evaluate(w: Path, out: str, model: str | None = None, data: str | None = None) -> list[str]:
    return ["evaluate", "--model", model or str(w / "classify"), "--data", data or str(w / "dev.tsv"), "--out", out]


def evaluate_predictions(w: Path, out: str) -> list[str]:
    return ["evaluate", "--model", str(w / "classify"), "--data", str(w / "dev.tsv"),
            "--out", str(w / "never-written.json"), "--predictions", out]


def predict(w: Path, out: str, model: str | None = None, source: str | None = None) -> list[str]:
    inputs = ["--input", source] if source else ["the film is good"]
    return ["predict", "--model", model or str(w / "classify"), "--out", out, *inputs]


def attention(w: Path, out: str, model: str | None = None) -> list[str]:
    return ["attention", "--model", model or str(w / "classify"), "the film is good", "--out", out]


def prepare(w: Path, out: str, source: str | None = None, vocab: str | None = None) -> list[str]:
    return ["data", "prepare", "--input", source or str(w / "corpus.txt"), "--vocab", vocab or str(w / "vocab.txt"),
            "--out", out, "--workers", "1", "--quiet"]


def pretrain(w: Path, out: str, prepared: str | None = None) -> list[str]:
    return ["pretrain", "--run-dir", out, f"data.prepared={prepared or w / 'prepared'}", "model.preset=tiny",
            "train.max_steps=1", "train.progress=false", "train.tensorboard=false", "--fill-mask"]


def plot(w: Path, out: str) -> list[str]:
    return ["plot", str(w / "finished-run"), "--out", out]


def prune(w: Path, out: str, **swap: str) -> list[str]:
    args = {"--model": str(w / "classify"), "--task-data": str(w / "train.tsv"), "--out": out, **swap}
    return ["prune", *[item for pair in args.items() for item in pair], "--keep-ffn", "0.5"]


def compress(w: Path, out: str, **swap: str) -> list[str]:
    args = {"--teacher": str(w / "classify"), "--train": str(w / "train.tsv"), "--dev": str(w / "dev.tsv"),
            "--out": out, **swap}
    return ["compress", *[item for pair in args.items() for item in pair], "trainer.max_steps=1", *QUIET]


# command -> (builder, output kind, file name for a new output, an existing finished output)
COMMANDS: dict[str, tuple[Callable[..., list[str]], str, str, str]] = {
    "finetune": (finetune, "directory", "new-run", "finished-run"),
    "distill": (distill, "directory", "new-run", "finished-run"),
    "pretrain": (pretrain, "directory", "new-run", "finished-run"),
    "quantize": (quantize, "directory", "new-model", "other-model"),
    "prune": (prune, "directory", "new-model", "other-model"),
    "compress": (compress, "directory", "new-run", "finished-run"),
    "tokenizer-train": (tokenizer, "directory", "new-vocab", "vocab-dir"),
    "data-prepare": (prepare, "directory", "new-data", "prepared"),
    "export-onnx": (export, "file", "new.onnx", "existing.onnx"),
    "evaluate-out": (evaluate, "file", "new.json", "existing.json"),
    "evaluate-predictions": (evaluate_predictions, "file", "new.jsonl", "existing.jsonl"),
    "predict-out": (predict, "file", "new.jsonl", "existing.jsonl"),
    "attention-out": (attention, "file", "new.html", "existing.html"),
}
if importlib.util.find_spec("matplotlib") is not None:  # without it, plot's one error is that it needs it
    COMMANDS["plot-out"] = (plot, "file", "new.png", "existing.png")


def _output_cases() -> list[tuple[str, Callable[[Path], list[str]], str]]:
    """Unwritable, read-only, finished and wrong-kind outputs, for every writing command."""
    cases = []
    for name, (build, kind, new, existing) in COMMANDS.items():
        def case(where: Callable[[Path], str], build=build) -> Callable[[Path], list[str]]:
            return lambda w: build(w, where(w))

        wrong = "a-file.txt" if kind == "directory" else "a-dir"
        suffix = "" if kind == "directory" else Path(new).suffix
        cases += [
            (f"{name}/unwritable", case(lambda w, s=suffix: UNWRITABLE + s), "not a directory"),
            (f"{name}/read-only", case(lambda w, s=suffix: READ_ONLY + s), "cannot write here"),
            (f"{name}/below-a-file", case(lambda w, n=new: str(w / "a-file.txt" / n)), "not a directory"),
            (f"{name}/finished", case(lambda w, e=existing: str(w / e)), "overwrite"),
            (f"{name}/wrong-kind", case(lambda w, x=wrong: str(w / x)), "directory"),
            (f"{name}/bad-yaml", lambda w, b=build, n=new: _with_config(b(w, str(w / n)), w / "bad.yaml"),
             "bad.yaml"),
            (f"{name}/unknown-key", lambda w, b=build, n=new: _with_config(b(w, str(w / n)), w / "unknown-key.yaml"),
             "no_such_option"),
            (f"{name}/config-is-a-directory", lambda w, b=build, n=new: _with_config(b(w, str(w / n)), w / "a-dir"),
             "is a directory, expected a YAML config file"),
        ]
    return cases


def _with_config(argv: list[str], config: Path) -> list[str]:
    """`argv` with `--config FILE` after the command words."""
    words = 2 if argv[0] in ("tokenizer", "data", "export") else 1
    return [*argv[:words], "--config", str(config), *argv[words:]]


def _input_cases() -> list[tuple[str, Callable[[Path], list[str]], str]]:
    """Wrong kinds of input path, broken vocabs and broken data rows."""
    return [
        # a directory where a file is expected
        ("finetune/train-is-a-directory", lambda w: finetune(w, str(w / "new-run"), **{"--train": str(w / "a-dir")}),
         "a-dir"),
        ("distill/train-is-a-directory", lambda w: distill(w, str(w / "new-run"), **{"--train": str(w / "a-dir")}),
         "a-dir"),
        ("evaluate/data-is-a-directory", lambda w: evaluate(w, str(w / "new.json"), data=str(w / "a-dir")), "a-dir"),
        ("predict/input-is-a-directory", lambda w: predict(w, str(w / "new.jsonl"), source=str(w / "a-dir")),
         "a-dir"),
        ("tokenizer-train/files-is-a-directory", lambda w: tokenizer(w, str(w / "new-vocab"), files=str(w / "a-dir")),
         "a-dir"),
        # a file where a directory is expected
        ("pretrain/prepared-is-a-file", lambda w: pretrain(w, str(w / "new-run"), prepared=str(w / "a-file.txt")),
         "a-file.txt"),
        ("data-prepare/vocab-is-an-empty-directory", lambda w: prepare(w, str(w / "new-data"), vocab=str(w / "a-dir")),
         "a-dir"),
        # a broken vocab
        ("finetune/empty-vocab", lambda w: finetune(w, str(w / "new-run"), **{"--model": str(w / "empty-vocab-model")}),
         "vocab"),
        ("distill/empty-vocab", lambda w: distill(w, str(w / "new-run"), **{"--teacher": str(w / "empty-vocab-model")}),
         "vocab"),
        ("evaluate/empty-vocab", lambda w: evaluate(w, str(w / "new.json"), model=str(w / "empty-vocab-model")),
         "vocab"),
        ("predict/empty-vocab", lambda w: predict(w, str(w / "new.jsonl"), model=str(w / "empty-vocab-model")),
         "vocab"),
        ("attention/empty-vocab", lambda w: attention(w, str(w / "new.html"), model=str(w / "empty-vocab-model")),
         "vocab"),
        ("data-prepare/empty-vocab", lambda w: prepare(w, str(w / "new-data"), vocab=str(w / "empty-vocab.txt")),
         "empty-vocab.txt"),
        # broken data rows
        ("finetune/bad-tsv-row", lambda w: finetune(w, str(w / "new-run"), **{"--train": str(w / "bad-rows.tsv")}),
         "bad-rows.tsv:3"),
        ("distill/bad-tsv-row", lambda w: distill(w, str(w / "new-run"), **{"--dev": str(w / "bad-rows.tsv")}),
         "bad-rows.tsv:3"),
        ("evaluate/bad-tsv-row", lambda w: evaluate(w, str(w / "new.json"), data=str(w / "bad-rows.tsv")),
         "bad-rows.tsv:3"),
        ("evaluate/bad-conll-row", lambda w: evaluate(w, str(w / "new.json"), model=str(w / "ner"),
                                                      data=str(w / "bad-rows.conll")), "bad-rows.conll:3"),
        ("evaluate/bad-squad-json", lambda w: evaluate(w, str(w / "new.json"), model=str(w / "qa"),
                                                       data=str(w / "bad-rows.json")), "bad-rows.json"),
        ("predict/bad-json-line", lambda w: predict(w, str(w / "new.jsonl"), source=str(w / "bad-rows.jsonl")),
         "bad-rows.jsonl:2"),
        ("tokenizer-train/not-utf8", lambda w: tokenizer(w, str(w / "new-vocab"), files=str(w / "binary.txt")),
         "binary.txt"),
        ("data-prepare/binary-input", lambda w: prepare(w, str(w / "new-data"), source=str(w / "binary.txt")),
         "binary.txt"),
    ]


def _compression_cases() -> list[tuple[str, Callable[[Path], list[str]], str]]:
    """prune and compress (issue 17): sizes the model cannot take, missing or broken task data,
    a model without the task head the scores and the teacher need."""
    def pruned(w: Path, *extra: str, **swap: str) -> list[str]:
        return [*prune(w, str(w / "new-model"), **swap), *extra]

    def compressed(w: Path, *extra: str, **swap: str) -> list[str]:
        return [*compress(w, str(w / "new-run"), **swap), *extra]

    return [
        ("prune/zero-neurons", lambda w: pruned(w)[:-2] + ["--intermediate-size", "0"], "at least 1"),
        ("prune/keep-ffn-rounds-to-zero", lambda w: pruned(w, "--keep-ffn", "0.0001"), "keeps 0 of the 512"),
        ("prune/more-layers-than-the-model", lambda w: pruned(w, "--layers", "3"), "has only 2"),
        ("prune/no-layer-left", lambda w: pruned(w, "--layers", "0"), "at least 1"),
        ("prune/keep-layer-out-of-range", lambda w: pruned(w, "--keep-layers", "0,2"), "out of range"),
        ("prune/missing-task-data", lambda w: pruned(w, **{"--task-data": str(w / "missing.tsv")}), "missing.tsv"),
        ("prune/task-data-is-a-directory", lambda w: pruned(w, **{"--task-data": str(w / "a-dir")}), "a-dir"),
        ("prune/bad-task-data-row", lambda w: pruned(w, **{"--task-data": str(w / "bad-rows.tsv")}), "bad-rows.tsv:3"),
        ("prune/no-task-head", lambda w: pruned(w, **{"--model": str(w / "encoder-model")}), "no task head"),
        ("compress/teacher-without-a-task-head", lambda w: compressed(w, **{"--teacher": str(w / "encoder-model")}),
         "no task head"),
        ("distill/teacher-without-a-task-head", lambda w: distill(w, str(w / "new-run"),
                                                                  **{"--teacher": str(w / "encoder-model")}),
         "no task head"),
        ("compress/missing-train", lambda w: compressed(w, **{"--train": str(w / "missing.tsv")}), "missing.tsv"),
        ("compress/dev-is-a-directory", lambda w: compressed(w, **{"--dev": str(w / "a-dir")}), "a-dir"),
        ("compress/bad-dev-row", lambda w: compressed(w, **{"--dev": str(w / "bad-rows.tsv")}), "bad-rows.tsv:3"),
        ("compress/speedup-below-1", lambda w: compressed(w, "--speedup", "0.5"), "--speedup"),
        ("compress/ner-teacher", lambda w: compressed(w, "--task", "ner", **{"--teacher": str(w / "ner")}),
         "classify only"),
    ]


def _special_cases() -> list[tuple[str, Callable[[Path], list[str]], str]]:
    """Outputs that are refused even with --overwrite, and unfinished runs."""
    return [
        ("quantize/out-is-the-model", lambda w: quantize(w, str(w / "classify"), model=str(w / "classify"))
         + ["--overwrite"], "must differ"),
        ("quantize/out-holds-the-model", lambda w: quantize(w, str(w / "finished-run"),
                                                            model=str(w / "finished-run" / "final")) + ["--overwrite"],
         "must differ"),
        ("quantize/out-holds-the-world", lambda w: quantize(w, str(w)) + ["--overwrite"], "must differ"),
        ("quantize/out-holds-other-files", lambda w: quantize(w, str(w / "notes")) + ["--overwrite"],
         "not a model"),
        ("tokenizer-train/into-a-model", lambda w: tokenizer(w, str(w / "other-model")) + ["--overwrite"],
         "a model"),
        ("finetune/checkpointed-run", lambda w: finetune(w, str(w / "checkpointed-run")), "trainer.resume=true"),
        ("pretrain/checkpointed-run", lambda w: pretrain(w, str(w / "checkpointed-run")), "--resume"),
        ("finetune/overwrite-and-resume", lambda w: finetune(w, str(w / "finished-run"))
         + ["--overwrite", "trainer.resume=true"], "pass one of them"),
    ]


def _model_cases() -> list[tuple[str, Callable[[Path], list[str]], str]]:
    """A model directory that is a file, or whose vocab or config.json is broken, for every
    command that reads one (the one-line errors themselves: tests/unit/test_bad_input_cases.py)."""
    readers = {"finetune": lambda w, m: finetune(w, str(w / "new-run"), **{"--model": m}),
               "distill": lambda w, m: distill(w, str(w / "new-run"), **{"--teacher": m}),
               "quantize": lambda w, m: quantize(w, str(w / "new-model"), model=m),
               "prune": lambda w, m: prune(w, str(w / "new-model"), **{"--model": m}),
               "compress": lambda w, m: compress(w, str(w / "new-run"), **{"--teacher": m}),
               "export-onnx": lambda w, m: export(w, str(w / "new.onnx"), model=m),
               "evaluate": lambda w, m: evaluate(w, str(w / "new.json"), model=m),
               "predict": lambda w, m: predict(w, str(w / "new.jsonl"), model=m),
               "attention": lambda w, m: attention(w, str(w / "new.html"), model=m)}
    broken = {"model-is-a-file": ("a-file.txt", "a-file.txt"),
              "duplicate-vocab-token": ("duplicate-vocab-model", "again on line"),
              "id2label-string": ("id2label-string-model", "id2label: expected a mapping"),
              "fewer-layers-than-weights": ("fewer-layers-model", "the config disagrees with the weights")}
    cases = []
    for name, read in readers.items():
        for problem, (model, expected) in broken.items():
            if name == "quantize" and problem == "duplicate-vocab-token":
                continue  # quantize copies the vocab as it is; the model it writes refuses it when loaded
            cases.append((f"{name}/{problem}", lambda w, r=read, m=model: r(w, str(w / m)), expected))
    return cases + [
        ("attention/max-length-past-the-positions", lambda w: attention(w, str(w / "new.html"))
         + ["--max-length", "100000"], "max_position_embeddings"),
        ("predict/empty-text", lambda w: predict(w, str(w / "new.jsonl")) + ["  "], "is empty"),
        ("data-prepare/duplicate-vocab-token", lambda w: prepare(
            w, str(w / "new-data"), vocab=str(w / "duplicate-vocab-model" / "vocab.txt")), "again on line"),
    ]


CASES = _output_cases() + _input_cases() + _compression_cases() + _special_cases() + _model_cases()
UNFINISHED_OK = {build for name, build, _ in CASES if name == "data-prepare/binary-input"}


@pytest.mark.parametrize("build, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_input(world, capsys, build, expected):
    argv = build(world)
    before = snapshot(world)
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        status = stop.code
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert status == 2, (argv, captured.err[-2000:])
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
    assert expected in errors[0], errors[0]
    after = snapshot(world)
    assert {path: after.get(path) for path in before} == before, f"{argv} changed an existing file"
    if build in UNFINISHED_OK:
        # Bad bytes deep in a corpus are met while shards are written: the new output is left
        # unfinished (no manifest.json, so nothing reads it, and a re-run resumes it).
        assert not any(path.endswith("manifest.json") for path in set(after) - set(before))
    else:
        assert after == before, f"{argv} wrote {sorted(set(after) - set(before))}"


# `plot` reads only metrics.jsonl (and checks first that its run directory is one).
@pytest.mark.parametrize("name", [name for name in COMMANDS if name != "plot-out"])
def test_the_output_is_checked_before_any_input_is_read(name, capsys):
    """With every input missing (the model, the data, the vocab) and an unwritable output, the
    error is the output's: the check comes before any model is loaded or any file is read."""
    build, kind, new, _ = COMMANDS[name]
    nowhere = Path("/nonexistent-bertforge-world")
    output = UNWRITABLE + ("" if kind == "directory" else Path(new).suffix)
    capsys.readouterr()
    assert main(build(nowhere, output)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {output}: cannot write here: /dev/null is not a directory"], errors


def test_overwrite_replaces_finished_outputs(world, tmp_path, capsys):
    """--overwrite replaces: a finished run starts over (no line of the old run's metrics is
    left), an existing model directory, vocab and file are replaced."""
    run = tmp_path / "run"
    shutil.copytree(world / "finished-run", run)
    assert main(finetune(world, str(run)) + ["--overwrite"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(record.get("loss") != 1.0 for record in records if record["split"] == "train")
    assert json.loads((run / "results.json").read_text())["steps"] == 1

    model = tmp_path / "model"
    shutil.copytree(world / "other-model", model)
    assert main(quantize(world, str(model)) + ["--overwrite"]) == 0
    # torch int8: the fp32 weights with the record the loader quantizes by
    assert json.loads((model / "config.json").read_text())["quantization"]["method"] == "torch dynamic int8"
    assert (model / "model.safetensors").exists()
    assert main(prune(world, str(model)) + ["--overwrite"]) == 0
    assert "quantization" not in json.loads((model / "config.json").read_text())
    assert json.loads((model / "config.json").read_text())["intermediate_size"] == 256

    vocab = tmp_path / "vocab"
    shutil.copytree(world / "vocab-dir", vocab)
    assert main(tokenizer(world, str(vocab)) + ["--overwrite"]) == 0
    assert (vocab / "tokenizer_config.json").read_text() != "{}\n"

    graph = tmp_path / "graph.onnx"
    graph.write_text("old")
    assert main(export(world, str(graph)) + ["--overwrite", "--no-check"]) == 0
    assert graph.stat().st_size > 1000
    assert not [path.name for path in tmp_path.rglob(".*")], "a temporary file was left behind"
