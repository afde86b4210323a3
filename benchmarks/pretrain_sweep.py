"""Pretraining experiments at one time budget: each setting is a `bertforge pretrain` run with
its own dotted overrides, run one after the other (never two at once: on 2 cores concurrent runs
make every figure wrong), summarized from the run directories into one table.

    python -m benchmarks.pretrain_sweep --sweep main-job --work /tmp/sweep
    python -m benchmarks.pretrain_sweep --sweep main-job --only mlm,mlm-m30 --work /tmp/sweep
    python -m benchmarks.pretrain_sweep --summarize /tmp/sweep/* --out benchmarks/results/pretrain_sweep

A run whose directory already holds final/ is not run again, so a sweep continues where it was
stopped. The table reads each run's config.yaml (the resolved settings) and metrics.jsonl (its
last held-out evaluation and its last training step), so it describes what ran, not what was asked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import machine_description

# Each sweep: name -> overrides of the built-in main job (`bertforge pretrain`, no data arguments).
# The "main-job" rows are issue 16's experiments, as run (benchmarks/results/pretrain_sweep.md):
# "base" was the main job before them; each other row names what it changes, and is read
# against the row it extends. The rows up to mlm-vocab4k-m30 ran with the main job's settings
# and corpus of commit e1219c2 (MLM+NSP, 8,000-token vocab, lr 1e-3, the 1.4 MB corpus); on
# today's main job (which is mlm-vocab4k-m30 on the 3.3 MB corpus) their overrides would
# start from another base, so "today" reruns the main job as it ships.
SWEEPS: dict[str, dict[str, list[str]]] = {
    "main-job": {
        "base": [],
        "lr2e-3": ["train.learning_rate=2e-3"],
        "lr4e-3-beta2-0.98": ["train.learning_rate=4e-3", "train.beta2=0.98"],
        "lr2e-3-seq64": ["train.learning_rate=2e-3", "data.prepare.max_seq_length=64"],
        "mlm": ["train.learning_rate=2e-3", "data.prepare.mode=mlm"],
        "mlm-m30": ["train.learning_rate=2e-3", "data.prepare.mode=mlm", "data.masking.masked_lm_prob=0.3"],
        "mlm-m40": ["train.learning_rate=2e-3", "data.prepare.mode=mlm", "data.masking.masked_lm_prob=0.4"],
        "mlm-dropout0.1": ["train.learning_rate=2e-3", "data.prepare.mode=mlm", "model.changes.hidden_dropout_prob=0.1",
                           "model.changes.attention_probs_dropout_prob=0.1"],
        "mlm-vocab4k": ["train.learning_rate=2e-3", "data.prepare.mode=mlm", "data.vocab_size=4000"],
        "mlm-vocab4k-m30": ["train.learning_rate=2e-3", "data.prepare.mode=mlm", "data.vocab_size=4000",
                            "data.masking.masked_lm_prob=0.3"],
        "today": [],
    },
}


def run_one(name: str, overrides: list[str], work: Path) -> Path:
    """One `bertforge pretrain` run into work/name (skipped when it has finished before)."""
    run_dir = work / name
    if (run_dir / "final" / "model.safetensors").exists():
        print(f"{name}: done before, kept", file=sys.stderr)
        return run_dir
    command = [sys.executable, "-m", "bertforge", "pretrain", "--quiet", f"run_dir={run_dir}", "--overwrite",
               *overrides]
    print(f"{name}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with (work / f"{name}.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    (run_dir / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    return run_dir


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """Settings and results of one finished run directory."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [row for row in rows if "mlm_accuracy" in row]
    steps = [row for row in rows if "loss" in row and "step" in row]
    wall = run_dir / "wall_seconds.txt"
    train, data, model = config["train"], config["data"], config["model"]
    return {
        "run": run_dir.name,
        "preset": model["preset"], "dropout": (model.get("changes") or {}).get("hidden_dropout_prob"),
        "mode": data["prepare"]["mode"], "seq": data["prepare"]["max_seq_length"],
        "mask": data["masking"]["masked_lm_prob"], "vocab": data.get("vocab") or data["vocab_size"],
        "batch": train["batch_size"], "lr": train["learning_rate"], "precision": train["precision"],
        "minutes": train.get("time_limit_minutes"),
        "steps": evals[-1]["step"] if evals else None,
        "train_loss": steps[-1]["loss"] if steps else None,
        "mlm_accuracy": evals[-1]["mlm_accuracy"] if evals else None,
        "mlm_loss": evals[-1].get("mlm_loss") if evals else None,
        "baseline": evals[-1].get("mlm_baseline_accuracy") if evals else None,
        "wall_seconds": float(wall.read_text()) if wall.exists() else None,
    }


COLUMNS = ["run", "preset", "mode", "seq", "mask", "vocab", "batch", "lr", "dropout", "precision", "minutes", "steps",
           "train_loss", "mlm_loss", "mlm_accuracy", "baseline", "wall_seconds"]


def render(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if value < 10 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", choices=sorted(SWEEPS))
    parser.add_argument("--only", help="comma-separated run names of the sweep")
    parser.add_argument("--work", type=Path, default=Path("runs/pretrain_sweep"))
    parser.add_argument("--summarize", nargs="*", type=Path, help="run directories to tabulate (no runs)")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    directories = [path for path in (args.summarize or []) if (path / "config.yaml").exists()]
    if args.sweep:
        args.work.mkdir(parents=True, exist_ok=True)
        chosen = SWEEPS[args.sweep]
        names = args.only.split(",") if args.only else list(chosen)
        unknown = [name for name in names if name not in chosen]
        if unknown:
            raise SystemExit(f"unknown run(s) {', '.join(unknown)} in sweep {args.sweep}; choose from {', '.join(chosen)}")
        directories += [run_one(name, chosen[name], args.work) for name in names]
    rows = [summarize_run(directory) for directory in directories if (directory / "metrics.jsonl").exists()]
    table = render(rows)
    print(table)
    if args.out:
        import torch

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
        machine = machine_description(torch.device("cpu"))
        args.out.with_suffix(".md").write_text(f"Machine: {machine}\n\n{table}\n")


if __name__ == "__main__":
    main()
