"""Training curves: a PNG of a run's metrics.jsonl, drawn by a Trainer hook and by `bertforge plot`.

The figure has up to four panels against the optimizer step: the training loss (with its parts,
such as mlm_loss and nsp_loss, when there are several), the learning rate, the held-out scores
(metrics whose values all lie in [-1, 1]: accuracy, F1, MCC) and the other held-out metrics
(losses, perplexity, SQuAD's percentages; on a log scale when they span more than a factor of
50). Counts (dev_examples, total) are not drawn.

`CurvesHook` redraws run_dir/curves.png after every evaluation, so a long run always has its
curves so far, and the final evaluation leaves the finished ones. It needs matplotlib (the
optional extra `plot`); without it the hook says so once and does nothing. Matplotlib is used
through its object API and the Agg canvas (no pyplot, no display), as bertforge.explain does.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertforge.errors import BertforgeError
from bertforge.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from bertforge.train.trainer import Trainer

CURVES_FILE = "curves.png"
"""The figure's name in a run directory."""

METRICS_FILE = "metrics.jsonl"

_NOT_CURVES = {"step", "split", "epoch"}
"""Record fields that are coordinates or labels, not metrics."""

_TRAIN_EXTRAS = {"lr", "grad_norm", "tokens_per_second", "elapsed_seconds"}
"""Train-record fields drawn elsewhere (lr) or not at all."""

_COUNTS = {"examples", "total", "count", "support"}
"""Last words of held-out fields that count items (dev_examples, total) rather than score them."""


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (`bertforge.train.metrics.MetricsLog`), in order; a missing
    or empty file, or a line that is not a JSON object with a step, is a `BertforgeError`."""
    path = Path(path)
    if not path.is_file():
        raise BertforgeError("no metrics.jsonl here: not a run directory, or the run has not logged yet",
                             path=path.parent if path.name == METRICS_FILE else path)
    records = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BertforgeError(f"not a JSON line ({error.msg})", path=path, line=number) from None
            if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
                raise BertforgeError("not a metrics record (a JSON object with a step)", path=path, line=number)
            records.append(record)
    if not records:
        raise BertforgeError("is empty: the run has logged no metrics yet", path=path)
    return records


def _series(records: list[dict[str, Any]], exclude: set[str]) -> dict[str, tuple[list[float], list[float]]]:
    """name -> (steps, values) of every numeric field; None (a non-finite value) is left out."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        for name, value in record.items():
            if name in exclude or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                steps, values = series.setdefault(name, ([], []))
                steps.append(record["step"])
                values.append(float(value))
    return series


def curve_panels(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, tuple[list[float], list[float]]]]]:
    """(title, {name: (steps, values)}) of each non-empty panel, in drawing order."""
    train = [r for r in records if r.get("split") == "train"]
    held_out = [r for r in records if r.get("split") != "train"]
    train_series = _series(train, _NOT_CURVES)
    losses = {name: points for name, points in train_series.items()
              if name not in _TRAIN_EXTRAS and (name == "loss" or name.endswith("_loss"))}
    learning_rate = {name: points for name, points in train_series.items() if name == "lr"}
    if len(losses) == 2 and "loss" in losses:
        losses = {"loss": losses["loss"]}  # one part only: it is the loss itself
    scores, others = {}, {}
    for name, points in _series(held_out, _NOT_CURVES).items():
        if name.rsplit("_", 1)[-1] in _COUNTS:
            continue
        # Scores lie in [0, 1] (MCC in [-1, 1]); losses and perplexity go to their own panel.
        bounded = all(-1.0 <= value <= 1.0 for value in points[1]) and not name.endswith("loss")
        (scores if bounded else others)[name] = points
    panels = [("training loss", losses), ("learning rate", learning_rate),
              ("held-out scores", scores), ("held-out losses and other metrics", others)]
    return [(title, series) for title, series in panels if series]


def draw_curves(records: list[dict[str, Any]], title: str = "") -> bytes:
    """The PNG (bytes) of `records`' curves; needs matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = curve_panels(records)
    if not panels:
        raise BertforgeError("the metrics hold no numeric values to draw")
    columns = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(6.0 * columns, 3.6 * rows), dpi=100, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, (name, series) in zip(axes, panels):
        for label, (steps, values) in sorted(series.items()):
            # Held-out metrics come from a few evaluations: markers keep a single point visible.
            marker = "o" if len(values) < 30 else None
            style = "--" if "baseline" in label else "-"
            axis.plot(steps, values, style, marker=marker, markersize=3, linewidth=1.4, label=label)
        values = [v for _, vs in series.values() for v in vs]
        if name.startswith("held-out losses") and min(values) > 0 and max(values) / min(values) > 50:
            axis.set_yscale("log")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if len(series) > 1 or name.startswith("held-out"):
            axis.legend(fontsize=8)
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def write_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw run_dir/metrics.jsonl into `out` (default run_dir/curves.png), atomically; returns `out`."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / METRICS_FILE)
    out = Path(out) if out is not None else run_dir / CURVES_FILE
    last = max(record["step"] for record in records)
    atomic_write_bytes(out, draw_curves(records, f"{run_dir.resolve().name}: step {last}"))
    return out


class CurvesHook:
    """A Trainer hook that redraws run_dir/curves.png from metrics.jsonl after each evaluation
    (rank 0 only; never stops the run; no state to keep: the figure is redrawn from the log)."""

    name = "curves"

    def __init__(self) -> None:
        self.available: bool | None = None

    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> bool:
        if not trainer.context.is_main:
            return False
        if self.available is None:
            self.available = matplotlib_available()
            if not self.available:
                trainer.print(f"no {CURVES_FILE}: matplotlib is not installed (pip install 'bertforge[plot]')")
        if self.available and (trainer.run_dir / METRICS_FILE).exists():
            write_curves(trainer.run_dir)
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
