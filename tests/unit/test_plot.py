"""Training curves: `pretrain` and `finetune` leave a non-blank curves.png in their run directory
(redrawn at each evaluation), `bertforge plot RUN_DIR` redraws it from metrics.jsonl, and a
missing or empty metrics.jsonl, or no matplotlib, is handled on one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertforge.cli.main import main
from bertforge.train import plot as plot_module

pytest.importorskip("matplotlib")

TINY = ["model.preset=tiny", "train.batch_size=8", "train.learning_rate=1e-3", "train.warmup_steps=1",
        "train.eval_batches=2", "train.precision=fp32", "train.log_every=1", "train.progress=false",
        "train.tensorboard=false"]


def check_not_blank(path: Path) -> None:
    """Several distinct colours, and coloured (curve) pixels besides the white and grey of the frame."""
    from matplotlib.image import imread

    image = imread(path)[..., :3]
    height, width, _ = image.shape
    assert height > 200 and width > 300
    colours = np.unique((image.reshape(-1, 3) * 255).round().astype(np.uint8), axis=0)
    assert len(colours) > 20
    saturation = image.max(axis=-1) - image.min(axis=-1)
    assert int((saturation > 0.3).sum()) > 500  # the coloured lines and markers of the curves
    # Inside the plot area (away from the titles and tick labels) too, not only in the legends.
    inner = saturation[height // 10: height // 2, width // 10: width // 2]
    assert int((inner > 0.3).sum()) > 50


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, data_dir) -> Path:
    from bertforge.data import PrepareConfig, prepare_corpus

    root = tmp_path_factory.mktemp("curves")
    text = (data_dir / "corpora/tinyshakespeare/input.txt").read_text(encoding="utf-8").splitlines()[:1500]
    (root / "shakespeare.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    prepare_corpus(PrepareConfig(inputs=[str(root / "shakespeare.txt")],
                                 vocab=str(data_dir / "vocab/bert-base-uncased-vocab.txt"),
                                 out=str(root / "data"), max_seq_length=64, eval_fraction=0.05, workers=1),
                   progress=False)
    run = root / "pretrain"
    assert main(["pretrain", "--run-dir", str(run), f"data.prepared={root / 'data'}", "train.max_steps=4",
                 "train.eval_every=2", *TINY, "fill_mask=[]"]) == 0
    return run


def test_pretrain_writes_its_curves(pretrain_run):
    check_not_blank(pretrain_run / "curves.png")
    titles = [title for title, _ in plot_module.curve_panels(plot_module.read_metrics(pretrain_run / "metrics.jsonl"))]
    assert titles == ["training loss", "learning rate", "held-out scores", "held-out losses and other metrics"]


def test_finetune_writes_its_curves(pretrain_run, tmp_path, data_dir):
    def head(name: str, lines: int) -> Path:
        source = (data_dir / "glue/sst2" / name).read_text(encoding="utf-8").split("\n")[:lines]
        (tmp_path / name).write_text("\n".join(source) + "\n", encoding="utf-8")
        return tmp_path / name

    out = tmp_path / "sst2"
    assert main(["finetune", "--task", "classify", "--model", str(pretrain_run / "final"),
                 "--train", str(head("train.tsv", 41)), "--dev", str(head("dev.tsv", 21)), "--out", str(out),
                 "--max-steps", "4", "settings.max_length=32", "trainer.batch_size=8", "trainer.eval_every=2",
                 "trainer.log_every=1", "trainer.progress=false", "trainer.tensorboard=false"]) == 0
    check_not_blank(out / "curves.png")
    panels = dict(plot_module.curve_panels(plot_module.read_metrics(out / "metrics.jsonl")))
    assert panels["held-out scores"]["dev_accuracy"][0] == [2, 4]  # one point per evaluation


def test_plot_redraws_from_metrics(pretrain_run, tmp_path, capsys):
    out = tmp_path / "again.png"
    assert main(["plot", str(pretrain_run), "--out", str(out)]) == 0
    assert f"{out}: 4 train and 3 held-out records, up to step 4" in capsys.readouterr().out
    check_not_blank(out)
    assert main(["plot", str(pretrain_run), "--out", str(out)]) == 2  # an existing file, without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["plot", str(pretrain_run), "--out", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("content", [None, "", "\n\n"])
def test_plot_without_metrics_is_one_error_line(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    assert main(["plot", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in captured.err
    assert ("no metrics.jsonl" if content is None else "is empty") in errors[0]
    assert not (tmp_path / "curves.png").exists()


def test_the_hook_redraws_at_each_evaluation_and_skips_without_matplotlib(tmp_path, monkeypatch, capsys):
    from test_trainer import SyntheticBatches, tiny_model

    from bertforge.train import TrainConfig, Trainer
    from bertforge.train.pretraining import PretrainingObjective

    drawn = []
    original = plot_module.write_curves
    monkeypatch.setattr(plot_module, "write_curves", lambda run_dir: drawn.append(original(run_dir)))

    def run(run_dir):
        config = TrainConfig(batch_size=4, max_steps=4, eval_every=2, warmup_steps=1, log_every=1, progress=False,
                             tensorboard=False)
        Trainer(tiny_model(), config, run_dir, SyntheticBatches(), PretrainingObjective(),
                evaluate=lambda model: {"score": 0.5}, hooks=[plot_module.CurvesHook()]).fit()

    run(tmp_path / "with")
    assert drawn == [tmp_path / "with" / "curves.png"] * 2  # after the evaluations at steps 2 and 4
    check_not_blank(tmp_path / "with" / "curves.png")
    monkeypatch.setattr(plot_module, "matplotlib_available", lambda: False)
    capsys.readouterr()
    run(tmp_path / "without")
    assert not (tmp_path / "without" / "curves.png").exists() and len(drawn) == 2
    assert capsys.readouterr().err.count("matplotlib is not installed") == 1
