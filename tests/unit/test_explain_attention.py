"""Attention maps: probabilities of the right shape whose rows sum to one, PNG images of the grid
and of one head that are neither blank nor tiny, the HTML page with its data, and errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from bertforge.cli.main import main
from bertforge.explain.attention import attention_maps, render_html
from bertforge.tasks.loading import load_model
from test_serve_models import make_model_dir


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("attention") / "model", "pretraining")


def png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_maps_are_probabilities(pretrained):
    maps = attention_maps(load_model(pretrained), "john smith lives in new york .")
    assert maps.tokens == ["[CLS]", "john", "smith", "lives", "in", "new", "york", ".", "[SEP]"]
    assert maps.weights.shape == (2, 2, 9, 9)
    np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-5)
    assert (maps.weights >= 0).all()
    cut = attention_maps(load_model(pretrained), "the film " * 50, max_length=16)
    assert len(cut.tokens) == 16 and cut.tokens[-1] == "[SEP]"


@pytest.mark.parametrize("args, minimum", [([], (400, 400)), (["--layer", "1"], (200, 400)),
                                           (["--layer", "1", "--head", "0"], (300, 300))])
def test_png_is_an_image_with_content(pretrained, tmp_path, capsys, args, minimum):
    pytest.importorskip("matplotlib", reason="PNG output needs matplotlib")
    pytest.importorskip("PIL", reason="reading the PNG back needs Pillow (a matplotlib dependency)")
    out = tmp_path / "map.png"
    assert main(["attention", "--model", str(pretrained), "the film is very good", *args, "--out", str(out)]) == 0
    assert "2 layers x 2 heads over 7 tokens" in capsys.readouterr().out
    pixels = png_pixels(out.read_bytes())
    height, width, _ = pixels.shape
    assert height >= minimum[0] and width >= minimum[1]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a drawing, not a blank canvas
    assert (pixels.mean(-1) < 200).mean() > 0.1  # a tenth of the image is ink (maps, labels)


def test_html_page_embeds_the_maps(pretrained, tmp_path):
    out = tmp_path / "map.html"
    assert main(["attention", "--model", str(pretrained), "peter went to </script> paris", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    start = page.index('<script id="data" type="application/json">') + len('<script id="data" type="application/json">')
    data = json.loads(page[start:page.index("</script>", start)].replace("<\\/", "</"))
    assert data["layers"] == 2 and data["heads"] == 2 and data["tokens"][0] == "[CLS]"
    assert page.count("</script>") == 3  # the text's "</script>" cannot close the data early
    served = render_html(api_url="/v1/attention", default_text="a <b> c")
    assert '"api": "/v1/attention"' in served and "a &lt;b&gt; c" in served


def test_attention_errors_are_one_line(pretrained, tmp_path, capsys):
    cases = [
        (["attention", "--model", str(pretrained), "x", "--out", str(tmp_path / "a.jpg")], "must end in .png or .html"),
        (["attention", "--model", str(pretrained), "x", "--layer", "2", "--out", str(tmp_path / "a.html")],
         "layers 0..1"),
        (["attention", "--model", str(pretrained), "x", "--head", "0", "--out", str(tmp_path / "a.html")],
         "--head needs --layer"),
        (["attention", "--model", str(pretrained), "x", "y", "--out", str(tmp_path / "a.html")], "one text"),
        (["attention", "--model", str(tmp_path / "none"), "x", "--out", str(tmp_path / "a.html")], "not found"),
        (["attention", "--model", str(pretrained), "x"], "--out"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    assert not (tmp_path / "a.html").exists()
