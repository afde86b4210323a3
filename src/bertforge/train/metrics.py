"""Metrics to JSONL (and TensorBoard when installed); `progress_bar` is `bertforge.progress`'s."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bertforge.progress import progress_bar

__all__ = ["MetricsLog", "progress_bar"]


class MetricsLog:
    """Appends one JSON object per line to run_dir/metrics.jsonl; mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional; JSONL always works
                self.writer = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                 for key, value in record.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self.writer is not None:
            split = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{split}/{key}", value, record.get("step", 0))

    def truncate_after(self, step: int) -> None:
        """Drop records logged after `step` (by a run that died before its next checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        from bertforge.fileio import atomic_write_text

        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
