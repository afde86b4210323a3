"""The CJK font of attention PNGs: which texts need one, which installed font is chosen (from an
injected font list), the one-line error when none is installed (raised before the model runs),
and the rescan that finds a font installed after matplotlib cached its font list."""

from __future__ import annotations

import pytest

from bertforge.errors import BertforgeError
from bertforge.explain import attention
from bertforge.explain.attention import choose_cjk_font, font_family, needs_cjk_font

SENTENCE = "这是一个好产品"


@pytest.mark.parametrize("text, expected", [
    (SENTENCE, True), ("[CLS] 好 [SEP]", True), ("##产", True), ("，", True), ("「", True), ("カタカナ", True),
    ("한국어", True), ("[CLS] a gripping film [SEP]", False), ("café naïve", False), ("", False),
])
def test_which_texts_need_a_cjk_font(text, expected):
    assert needs_cjk_font(text) is expected


def test_the_preferred_installed_font_is_chosen():
    assert choose_cjk_font(["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC"]) == "Noto Sans CJK SC"
    # Simplified Chinese glyph forms before the Japanese variant of the same family.
    assert choose_cjk_font(["DejaVu Sans", "Noto Sans CJK JP", "WenQuanYi Zen Hei"]) == "WenQuanYi Zen Hei"
    assert choose_cjk_font(["AR PL UMing CN", "Liberation Sans"]) == "AR PL UMing CN"


def test_no_cjk_font_is_a_one_line_error_saying_how_to_install_one():
    with pytest.raises(BertforgeError) as caught:
        choose_cjk_font(["DejaVu Sans", "Liberation Sans", "STIXGeneral"])
    message = str(caught.value)
    assert "\n" not in message
    assert "no CJK font is installed" in message and "apt-get install fonts-noto-cjk" in message


def test_font_family_asks_for_fonts_only_for_cjk_text(monkeypatch):
    asked = []
    monkeypatch.setattr(attention, "installed_fonts", lambda: asked.append(1) or ["DejaVu Sans", "Noto Sans CJK SC"])
    assert font_family(["[CLS]", "a", "film", "[SEP]"]) is None and not asked
    assert font_family(["[CLS]", "好", "[SEP]"]) == ["Noto Sans CJK SC", "DejaVu Sans"]
    monkeypatch.setattr(attention, "installed_fonts", lambda: ["DejaVu Sans"])
    with pytest.raises(BertforgeError, match="no CJK font"):
        font_family([SENTENCE])


def test_a_png_of_chinese_text_without_a_font_fails_before_the_model_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(attention, "installed_fonts", lambda: ["DejaVu Sans"])

    class NoModel:
        def __getattr__(self, name):
            raise AssertionError("the model was used before the font was checked")

    with pytest.raises(BertforgeError, match="no CJK font"):
        attention.write_attention(NoModel(), SENTENCE, tmp_path / "map.png")
    assert not (tmp_path / "map.png").exists()


def test_a_font_installed_after_the_cache_is_found_by_a_rescan(monkeypatch):
    font_manager = pytest.importorskip("matplotlib.font_manager")

    class Entry:
        def __init__(self, name, fname):
            self.name, self.fname = name, fname

    class Manager:
        def __init__(self):
            self.ttflist = [Entry("DejaVu Sans", "/fonts/DejaVuSans.ttf")]

        def addfont(self, path):
            if path.endswith("broken.ttf"):
                raise RuntimeError("Can not load face")
            self.ttflist.append(Entry("Noto Sans CJK SC", path))

    manager = Manager()
    monkeypatch.setattr(font_manager, "fontManager", manager)
    monkeypatch.setattr(font_manager, "findSystemFonts",
                        lambda: ["/fonts/DejaVuSans.ttf", "/fonts/broken.ttf", "/fonts/NotoSansCJK-Regular.ttc"])
    assert attention.installed_fonts() == ["DejaVu Sans", "Noto Sans CJK SC"]
    assert [entry.fname for entry in manager.ttflist] == ["/fonts/DejaVuSans.ttf", "/fonts/NotoSansCJK-Regular.ttc"]
    # With a CJK font already listed, nothing is scanned.
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda: pytest.fail("rescanned"))
    assert "Noto Sans CJK SC" in attention.installed_fonts()
