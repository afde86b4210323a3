"""`bertforge attention` on the built-in default model: `bertforge pretrain` with no data arguments
(the built-in corpus of Python's documentation, a WordPiece vocab trained on it, NSP pairs) writes
runs/pretrain/final; here with the tiny preset and two steps instead of the mini preset's
minutes. Run from the directory holding runs/, `bertforge attention TEXT --out FILE.png` (no
--model) draws that model, and the PNG is checked: its pixel size, its byte size, and that it is
not blank (many colours, a fair share of ink)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bertforge.cli.main import main

pytest.importorskip("matplotlib", reason="PNG output needs matplotlib")
Image = pytest.importorskip("PIL.Image", reason="reading the PNG back needs Pillow (a matplotlib dependency)")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("default-model")
    status = main(["pretrain", "--run-dir", str(root / "runs/pretrain"), "--quiet", "model.preset=tiny",
                   "train.max_steps=2", "train.batch_size=8", "train.precision=fp32", "train.eval_batches=1",
                   "train.tensorboard=false", "--fill-mask", "The [MASK] statement leaves a loop."])
    assert status == 0 and (root / "runs/pretrain/final/config.json").exists()
    return root


def picture(path):
    data = path.read_bytes()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def not_blank(pixels: np.ndarray) -> None:
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    ink = float((pixels.mean(-1) < 200).mean())
    assert colours > 100, colours
    assert 0.1 < ink < 0.95, ink
    assert pixels.std() > 30


def test_png_of_the_default_model(default_run, monkeypatch, capsys):
    monkeypatch.chdir(default_run)
    sentence = "A dictionary maps each key to a value."
    assert main(["attention", sentence, "--out", "grid.png"]) == 0
    assert "2 layers x 2 heads" in capsys.readouterr().out
    data, pixels = picture(default_run / "grid.png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 2_000_000
    height, width, _ = pixels.shape
    assert 400 <= width <= 2000 and 400 <= height <= 2000
    not_blank(pixels)

    assert main(["attention", sentence, "--layer", "1", "--head", "1", "--out", "head.png"]) == 0
    data, pixels = picture(default_run / "head.png")
    assert 10_000 < len(data) < 2_000_000 and min(pixels.shape[:2]) >= 400
    not_blank(pixels)
