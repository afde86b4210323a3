"""`bertforge plot`: redraw a run's training curves (loss, learning rate, held-out metrics against
the step) from its metrics.jsonl into a PNG (see bertforge.train.plot)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertforge.cli.command import Command, option


@dataclass
class PlotOptions:
    run_dir: Path | None = option(None, positional=True,
                                  help="a run directory of pretrain, finetune or distill (it holds metrics.jsonl)")
    out: Path | None = option(None, help="the PNG to write (default: RUN_DIR/curves.png, the run's own "
                                         "figure, redrawn in place)")
    overwrite: bool = option(False, help="replace an existing --out file (refused without it; RUN_DIR/curves.png, "
                                         "drawn from the run's own metrics, is always redrawn)")


def run(options: PlotOptions) -> int:
    from bertforge.errors import BertforgeError
    from bertforge.fileio import prepare_output
    from bertforge.train.plot import CURVES_FILE, METRICS_FILE, matplotlib_available, read_metrics, write_curves

    if options.run_dir is None:
        raise BertforgeError("plot needs a run directory: bertforge plot RUN_DIR")
    if not options.run_dir.is_dir():
        raise BertforgeError("is not a directory; expected a run directory holding metrics.jsonl",
                             path=options.run_dir)
    if not matplotlib_available():
        raise BertforgeError("plot needs matplotlib: pip install 'bertforge[plot]'")
    records = read_metrics(options.run_dir / METRICS_FILE)
    # The run's own curves.png is derived from metrics.jsonl, so redrawing it loses nothing; any
    # other file is a user's output and is kept unless --overwrite.
    out = options.out or options.run_dir / CURVES_FILE
    prepare_output(out, kind="file", overwrite=options.overwrite or options.out is None)
    write_curves(options.run_dir, out)
    train = sum(1 for record in records if record.get("split") == "train")
    print(f"{out}: {train} train and {len(records) - train} held-out records, "
          f"up to step {max(record['step'] for record in records)}")
    return 0


COMMANDS = [Command(
    ("plot",), PlotOptions, run,
    "redraw a run's curves (training loss, learning rate, held-out metrics) from its metrics.jsonl as a PNG",
    examples=["bertforge plot runs/pretrain", "bertforge plot runs/sst2 --out sst2-curves.png"],
    takes_overrides=False)]
