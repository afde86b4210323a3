"""`python -m benchmarks.chinese --quick` end to end (slow, not in CI: several minutes): the
Chinese corpus, half a minute of tiny-preset pretraining, then every task on every side, and
the table with a figure in each cell. A second run finds every unit cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_quick_run_fills_every_cell_and_caches_its_units(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BERTFORGE_DATA": str(data_dir), "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "benchmarks.chinese", "--quick", "--work", str(tmp_path), "--workers", "2"]
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    table = json.loads((tmp_path / "chinese.json").read_text(encoding="utf-8"))["table"]
    assert set(table) == {"chnsenticorp", "msra", "cmrc2018", "thucnews"}
    for task, sides in table.items():
        assert set(sides) == {"bertforge", "random", "transformers"}, task
    text = (tmp_path / "chinese.md").read_text(encoding="utf-8")
    assert "| thucnews (test, accuracy) | 0." in text
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "running:" not in second.stdout
