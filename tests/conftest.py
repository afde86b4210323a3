"""Shared fixtures: where the shared data lives, and seeding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$BERTFORGE_DATA` when set, else `../shared/data` beside the repository."""
    env = os.environ.get("BERTFORGE_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data directory; tests that need it skip with a reason when it is absent."""
    directory = shared_data_dir()
    if not (directory / "MANIFEST.md").exists():
        pytest.skip(f"shared data not found at {directory} (set BERTFORGE_DATA)")
    return directory


def require_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data file missing: {path}")
    return path


@pytest.fixture(autouse=True)
def _seed_everything():
    import torch

    torch.manual_seed(0)
    yield
