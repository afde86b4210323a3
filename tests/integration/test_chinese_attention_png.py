"""`bertforge attention` on "这是一个好产品": the PNG's tick labels and title are drawn in an installed
CJK font, so matplotlib reports no missing glyph while drawing (its "Glyph N (...) missing from
font(s) DejaVu Sans." UserWarning is what empty boxes come with). The model is a random tiny
encoder with a vocab of the sentence's characters: what it attends to does not matter here, only
how its tokens are drawn. The control shows the check can fail: the same maps drawn in
matplotlib's default font do report missing glyphs.

Needs a CJK font (scripts/install-test-browser.sh installs Debian's fonts-noto-cjk); skipped with
that reason without one."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest

from bertforge.cli.main import main
from bertforge.errors import BertforgeError

pytest.importorskip("matplotlib", reason="PNG output needs matplotlib")
Image = pytest.importorskip("PIL.Image", reason="reading the PNG back needs Pillow (a matplotlib dependency)")

SENTENCE = "这是一个好产品"
MISSING_GLYPH = re.compile(r"Glyph \d+ .* missing from font")


@pytest.fixture(scope="module")
def cjk_font():
    from bertforge.explain.attention import choose_cjk_font, installed_fonts

    try:
        return choose_cjk_font(installed_fonts())
    except BertforgeError:
        pytest.skip("no CJK font installed for matplotlib (apt-get install fonts-noto-cjk, "
                    "or run scripts/install-test-browser.sh as root)")


@pytest.fixture(scope="module")
def chinese_model(tmp_path_factory):
    import torch

    from bertforge.config import BertConfig
    from bertforge.model import BertModel
    from bertforge.tokenizer import BertTokenizer

    directory = tmp_path_factory.mktemp("zh-encoder")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(SENTENCE + "差")]
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    config = BertConfig.from_preset("tiny", vocab_size=len(tokens), max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory, tokenizer=BertTokenizer(directory / "vocab.txt"))
    return directory


def glyph_warnings(caught) -> list[str]:
    return [str(warning.message) for warning in caught if MISSING_GLYPH.search(str(warning.message))]


def draw(arguments) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(arguments) == 0
    return glyph_warnings(caught)


def test_chinese_tick_labels_have_real_glyphs(cjk_font, chinese_model, tmp_path, capsys):
    head = tmp_path / "head.png"
    assert draw(["attention", "--model", str(chinese_model), SENTENCE, "--layer", "0", "--head", "1",
                 "--out", str(head)]) == []
    assert "over 9 tokens" in capsys.readouterr().out  # [CLS], the seven characters, [SEP]
    grid = tmp_path / "grid.png"
    assert draw(["attention", "--model", str(chinese_model), SENTENCE, "--out", str(grid)]) == []
    for path in (head, grid):
        pixels = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
        assert min(pixels.shape[:2]) >= 400 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100


def test_the_default_font_would_have_drawn_empty_boxes(cjk_font, chinese_model, monkeypatch):
    from bertforge.explain import attention
    from bertforge.tasks.loading import load_model

    maps = attention.attention_maps(load_model(chinese_model), SENTENCE)
    monkeypatch.setattr(attention, "font_family", lambda texts: None)  # matplotlib's default, DejaVu Sans
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attention.render_png(maps, 0, 0)
    missing = glyph_warnings(caught)
    assert missing and all("DejaVu Sans" in message for message in missing)
