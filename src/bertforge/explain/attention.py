"""Attention maps: the softmax(QK^T / sqrt(D)) probabilities of every layer and head for one
input, drawn as a PNG (matplotlib) or an interactive HTML page.

The probabilities come from the model itself (`output_attentions=True`, which takes the
encoder's explicit softmax path rather than the fused kernel). Each map is (T, T): row i is
how token i (the query) spreads its attention over the tokens j (the keys); every row sums to 1.
Layers and heads are numbered from 0.

The PNG is either a grid (layers x heads, or the heads of one layer) or one head with its token
labels; each map's colours run from 0 to its own largest weight, so that the structure of a
diffuse head stays visible (the single-head plot has a colour bar with the values). The HTML
page is self-contained (no external scripts): with maps embedded it shows them offline;
served by `bertforge serve` at /attention it asks /v1/attention for any sentence.
Matplotlib is used through its object API (Figure + the Agg canvas), never pyplot, so drawing
changes no global state (the one exception: a font installed after matplotlib cached its font
list is added to its in-memory list, see `installed_fonts`).

Text with CJK characters (Chinese, Japanese, Korean, full-width punctuation) is drawn in a CJK
font (`CJK_FONTS`, the first one installed; DejaVu Sans behind it for any glyph it lacks):
matplotlib's default DejaVu Sans has no CJK glyphs and would draw empty boxes. With no CJK font
installed, a PNG of such text is a one-line error saying how to install one.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_bytes, atomic_write_text
from bertforge.tasks.reading import is_cjk

MAX_TOKENS = 128
"""Default cap on the tokens of a map ([CLS] and [SEP] included)."""

CJK_FONTS = (
    "Noto Sans CJK SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
    "Noto Sans CJK TC", "Noto Sans CJK HK", "Noto Sans CJK JP", "Noto Sans CJK KR", "Source Han Sans",
    "Noto Serif CJK SC", "Source Han Serif SC", "Noto Serif CJK JP", "AR PL UMing CN", "AR PL UKai CN",
    "AR PL UMing TW", "Droid Sans Fallback", "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans GB",
    "Heiti SC", "Arial Unicode MS",
)
"""Fonts with CJK glyphs, in order of preference: Simplified Chinese glyph forms first (the
project's Chinese models), then the other CJK variants, which draw the same characters."""

CJK_FONT_MISSING = ("the text has CJK characters but no CJK font is installed for matplotlib, so the PNG would "
                    "show empty boxes: install one (Debian/Ubuntu: apt-get install fonts-noto-cjk, as "
                    "scripts/install-test-browser.sh does) or write .html")

_CJK_BLOCKS = ((0x2E80, 0x2FDF), (0x3000, 0x33FF), (0xAC00, 0xD7AF), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF))
"""Besides the ideographs (`is_cjk`): radicals, CJK punctuation, kana, bopomofo, Hangul, enclosed
and compatibility forms, CJK compatibility punctuation, full-width forms; none is in DejaVu Sans."""


def needs_cjk_font(text: str) -> bool:
    """Whether `text` holds a character only a CJK font draws."""
    return any(is_cjk(character) or any(low <= ord(character) <= high for low, high in _CJK_BLOCKS)
               for character in text)


def choose_cjk_font(available: Iterable[str]) -> str:
    """The first of `CJK_FONTS` among the font family names `available`; a one-line error saying
    how to install one when none is."""
    names = set(available)
    for name in CJK_FONTS:
        if name in names:
            return name
    raise BertforgeError(CJK_FONT_MISSING)


def installed_fonts() -> list[str]:
    """The font family names matplotlib can draw with.

    Matplotlib caches its font list (in its cache directory) the first time it runs, so a font
    installed afterwards is not in it until the cache is rebuilt. When the list has no CJK font,
    the system's font files are scanned and the ones missing from the list are added to it, in
    memory, as a rebuilt cache would have them.
    """
    from matplotlib import font_manager

    manager = font_manager.fontManager
    names = {entry.name for entry in manager.ttflist}
    if names.isdisjoint(CJK_FONTS):
        known = {entry.fname for entry in manager.ttflist}
        for path in font_manager.findSystemFonts():
            if path in known:
                continue
            try:
                manager.addfont(path)
            except Exception:  # noqa: BLE001 - a font file matplotlib cannot read is skipped, as its own scan does
                continue
        names = {entry.name for entry in manager.ttflist}
    return sorted(names)


def font_family(texts: Iterable[str]) -> list[str] | None:
    """The font families to draw `texts` with: None (matplotlib's default) unless one holds CJK
    characters, else the CJK font chosen, then DejaVu Sans for any glyph it lacks."""
    if not any(needs_cjk_font(text) for text in texts):
        return None
    return [choose_cjk_font(installed_fonts()), "DejaVu Sans"]


@dataclass
class AttentionMaps:
    text: str
    text_pair: str | None
    tokens: list[str]
    weights: np.ndarray
    """(L, N, T, T) float32: layer, head, query token, key token."""

    @property
    def layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    def to_json(self, decimals: int = 4) -> dict[str, Any]:
        return {"text": self.text, "text_pair": self.text_pair, "tokens": self.tokens, "layers": self.layers,
                "heads": self.heads, "weights": np.round(self.weights.astype(np.float64), decimals).tolist()}


def attention_maps(loaded: Any, text: str, text_pair: str | None = None, max_length: int = MAX_TOKENS) -> AttentionMaps:
    """The maps of `text` (and `text_pair`) under `loaded` (a `bertforge.tasks.loading.LoadedModel`
    on the PyTorch backend), cut to `max_length` tokens."""
    import torch

    if not text.strip():
        raise BertforgeError("the text is empty")
    tokenizer = loaded.tokenizer
    batch = tokenizer(text, text_pair, truncation=True, max_length=max_length, return_tensors="pt")
    encoder = loaded.encoder
    device = next(encoder.parameters()).device
    with torch.inference_mode():
        output = encoder(batch["input_ids"].to(device), batch["token_type_ids"].to(device),
                         batch["attention_mask"].to(device), output_attentions=True)
    weights = torch.stack([layer[0] for layer in output.attentions]).float().cpu().numpy()  # (L, N, T, T)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    return AttentionMaps(text, text_pair, list(tokens), weights)


def _check_indices(maps: AttentionMaps, layer: int | None, head: int | None) -> None:
    if layer is not None and not 0 <= layer < maps.layers:
        raise BertforgeError(f"--layer {layer} is out of range: the model has layers 0..{maps.layers - 1}")
    if head is not None and not 0 <= head < maps.heads:
        raise BertforgeError(f"--head {head} is out of range: the model has heads 0..{maps.heads - 1}")
    if head is not None and layer is None:
        raise BertforgeError("--head needs --layer")


def render_png(maps: AttentionMaps, layer: int | None = None, head: int | None = None, dpi: int = 100) -> bytes:
    """PNG bytes: one head with token labels (layer and head given), the heads of one layer
    (layer given), or every layer x head (neither)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_indices(maps, layer, head)
    tokens = maps.tokens
    count = len(tokens)
    family = font_family([*tokens, maps.text, maps.text_pair or ""])
    font = {} if family is None else {"fontfamily": family}
    if layer is not None and head is not None:
        side = min(max(4.0, 0.32 * count + 2.0), 30.0)
        figure = Figure(figsize=(side + 1.2, side), dpi=dpi)
        axes = figure.add_subplot(1, 1, 1)
        matrix = maps.weights[layer, head]
        image = axes.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-6))
        axes.set_xticks(range(count), labels=tokens, rotation=90, fontsize=8, **font)
        axes.set_yticks(range(count), labels=tokens, fontsize=8, **font)
        axes.set_xlabel("attended token (key)")
        axes.set_ylabel("attending token (query)")
        axes.set_title(f"layer {layer}, head {head}")
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    else:
        layers = [layer] if layer is not None else list(range(maps.layers))
        columns = maps.heads
        cell = 2.4 if count <= 24 else 2.0
        figure = Figure(figsize=(cell * columns + 0.6, cell * len(layers) + 0.8), dpi=dpi)
        labelled = count <= 24
        for row, layer_index in enumerate(layers):
            for column in range(columns):
                axes = figure.add_subplot(len(layers), columns, row * columns + column + 1)
                matrix = maps.weights[layer_index, column]
                axes.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-6))
                axes.set_title(f"L{layer_index} H{column}", fontsize=8)
                axes.set_xticks([])
                axes.set_yticks([])
                if labelled and column == 0:
                    axes.set_yticks(range(count), labels=tokens, fontsize=5, **font)
                if labelled and row == len(layers) - 1:
                    axes.set_xticks(range(count), labels=tokens, rotation=90, fontsize=5, **font)
        figure.suptitle(_title(maps), fontsize=9, **font)
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _title(maps: AttentionMaps) -> str:
    text = maps.text if len(maps.text) <= 80 else maps.text[:77] + "..."
    return f"attention: {text}"


def render_html(maps: AttentionMaps | None = None, api_url: str | None = None, default_text: str = "",
                layer: int | None = None, head: int | None = None) -> str:
    """The interactive page: embedded `maps`, or a form that asks `api_url` (POST {"text"})."""
    if maps is not None:
        _check_indices(maps, layer, head)
    data = json.dumps(maps.to_json() if maps is not None else None).replace("</", "<\\/")
    settings = json.dumps({"api": api_url, "layer": layer, "head": head}).replace("</", "<\\/")
    return (_PAGE.replace("__DATA__", data).replace("__SETTINGS__", settings)
            .replace("__TEXT__", html.escape(default_text if maps is None else maps.text))
            .replace("__FORM_HIDDEN__", "" if api_url else "hidden"))


def write_attention(loaded: Any, text: str, out: str | Path, *, text_pair: str | None = None,
                    layer: int | None = None, head: int | None = None, max_length: int = MAX_TOKENS) -> AttentionMaps:
    """`bertforge attention`: write FILE.png or FILE.html (atomically) and return the maps."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise BertforgeError("the output must end in .png or .html", path=out)
    if suffix == ".png":
        font_family([text, text_pair or ""])  # no CJK font for CJK text: say so before running the model
    maps = attention_maps(loaded, text, text_pair, max_length)
    if suffix == ".png":
        atomic_write_bytes(out, render_png(maps, layer, head))
    else:
        atomic_write_text(out, render_html(maps, layer=layer, head=head))
    return maps


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bertforge attention</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
  form { display: flex; gap: .5rem; margin-bottom: 1rem; }
  form[hidden] { display: none; }
  #text { flex: 1; font-size: 1rem; padding: .3rem; }
  .controls { display: flex; gap: 1rem; align-items: center; margin-bottom: .8rem; }
  #grid { display: flex; flex-wrap: wrap; gap: 1rem; }
  figure { margin: 0; }
  figcaption { font-size: .8rem; text-align: center; }
  #tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: .2rem .4rem;
         font-size: .8rem; border-radius: 3px; display: none; }
  #status { color: #a00; min-height: 1.2rem; }
</style>
</head>
<body>
<h1>Attention maps</h1>
<form id="form" __FORM_HIDDEN__>
  <input id="text" name="text" value="__TEXT__" aria-label="sentence">
  <button type="submit">Show</button>
</form>
<div class="controls">
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <span id="summary"></span>
</div>
<div id="status" role="status"></div>
<div id="grid"></div>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script id="settings" type="application/json">__SETTINGS__</script>
<script>
"use strict";
const settings = JSON.parse(document.getElementById("settings").textContent);
let maps = JSON.parse(document.getElementById("data").textContent);
const layerSelect = document.getElementById("layer"), headSelect = document.getElementById("head");
const grid = document.getElementById("grid"), tip = document.getElementById("tip");
const status = document.getElementById("status");

function color(value) {
  // white -> dark blue, so that a blank map and an empty one cannot be confused.
  const t = Math.max(0, Math.min(1, value));
  const r = Math.round(255 - t * 247), g = Math.round(255 - t * 207), b = Math.round(255 - t * 148);
  return "rgb(" + r + "," + g + "," + b + ")";
}

function draw(canvas, matrix, tokens, labelled) {
  const n = tokens.length;
  const cell = labelled ? Math.max(12, Math.min(28, Math.floor(560 / n))) : Math.max(3, Math.floor(180 / n));
  const margin = labelled ? 90 : 0;
  // Colours run from 0 to the map's own largest weight, as in the PNG, so a diffuse head shows.
  const top = Math.max(1e-9, ...matrix.map((row) => Math.max(...row)));
  canvas.width = margin + cell * n;
  canvas.height = margin + cell * n;
  canvas.dataset.cell = cell;
  canvas.dataset.margin = margin;
  canvas.dataset.top = top;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      ctx.fillStyle = color(matrix[i][j] / top);
      ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
    }
  }
  if (labelled) {
    ctx.fillStyle = "#222";
    ctx.font = Math.min(12, cell - 2) + "px sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i < n; i++) ctx.fillText(tokens[i], margin - 4, margin + i * cell + cell / 2);
    for (let j = 0; j < n; j++) {
      ctx.save();
      ctx.translate(margin + j * cell + cell / 2, margin - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(tokens[j], 0, 0);
      ctx.restore();
    }
  }
  canvas.onmousemove = (event) => {
    const box = canvas.getBoundingClientRect();
    const x = (event.clientX - box.left) * canvas.width / box.width - margin;
    const y = (event.clientY - box.top) * canvas.height / box.height - margin;
    const i = Math.floor(y / cell), j = Math.floor(x / cell);
    if (i < 0 || j < 0 || i >= n || j >= n) { tip.style.display = "none"; return; }
    tip.textContent = tokens[i] + " \\u2192 " + tokens[j] + ": " + matrix[i][j].toFixed(3);
    tip.style.left = (event.clientX + 12) + "px";
    tip.style.top = (event.clientY + 12) + "px";
    tip.style.display = "block";
  };
  canvas.onmouseleave = () => { tip.style.display = "none"; };
}

function options(select, count, allLabel) {
  const previous = select.value;
  select.innerHTML = "";
  if (allLabel) select.add(new Option(allLabel, "all"));
  for (let i = 0; i < count; i++) select.add(new Option(String(i), String(i)));
  if ([...select.options].some((option) => option.value === previous)) select.value = previous;
}

function render() {
  grid.innerHTML = "";
  if (!maps) return;
  const layer = Number(layerSelect.value);
  const heads = headSelect.value === "all" ? [...Array(maps.heads).keys()] : [Number(headSelect.value)];
  for (const head of heads) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.className = "attention-map";
    canvas.dataset.layer = layer;
    canvas.dataset.head = head;
    draw(canvas, maps.weights[layer][head], maps.tokens, heads.length === 1);
    const caption = document.createElement("figcaption");
    caption.textContent = "layer " + layer + ", head " + head;
    figure.append(canvas, caption);
    grid.append(figure);
  }
  document.getElementById("summary").textContent =
    maps.tokens.length + " tokens, " + maps.layers + " layers x " + maps.heads + " heads";
  document.body.dataset.ready = "true";
}

function show(data) {
  maps = data;
  options(layerSelect, maps.layers, null);
  options(headSelect, maps.heads, "all heads");
  // A layer and head asked for on the command line are shown first, once.
  if (settings.layer !== null) { layerSelect.value = String(settings.layer); settings.layer = null; }
  if (settings.head !== null) { headSelect.value = String(settings.head); settings.head = null; }
  render();
}

// Only the newest request may change the page: an answer to an older one (the text the page
// opened with, say) that arrives after it would otherwise overwrite the newer result or error.
let latest = 0;
async function ask(text) {
  const request = ++latest;
  document.body.dataset.ready = "false";
  status.textContent = "";
  try {
    const response = await fetch(settings.api, {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({text: text})});
    const body = await response.json();
    if (request !== latest) return;
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    show(body);
  } catch (error) {
    if (request !== latest) return;
    status.textContent = "error: " + error.message;
    document.body.dataset.ready = "error";
  }
}

layerSelect.onchange = render;
headSelect.onchange = render;
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text").value;
  history.replaceState(null, "", "?text=" + encodeURIComponent(text));
  ask(text);
};
if (maps) {
  show(maps);
} else if (settings.api) {
  const text = new URLSearchParams(location.search).get("text") || document.getElementById("text").value;
  document.getElementById("text").value = text;
  if (text) ask(text);
}
</script>
</body>
</html>
"""
