"""Shared fixtures: where the MQuAKE data lives (``EDITAGENT_DATA`` overrides the default beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Idle OpenMP threads sleep instead of spinning. On a small machine shared with other work, spinning threads
# made one MiniLM query take ~0.75 s instead of ~25 ms. Must be set before torch loads; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MQUAKE_DEV_FILE = "MQuAKE-CF-3k-dev600.json"


@pytest.fixture(scope="session")
def mquake_dir() -> Path:
    """The folder holding the MQuAKE files; the test is skipped when they are not there."""
    env = os.environ.get("EDITAGENT_DATA")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "mquake"
    if not (folder / MQUAKE_DEV_FILE).is_file():
        pytest.skip(f"MQuAKE data not found in {folder}; set EDITAGENT_DATA to the folder holding {MQUAKE_DEV_FILE}")
    return folder


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real packaged all-MiniLM-L6-v2, loaded once per session (it takes several seconds)."""
    from editagent.models import load_embedder

    return load_embedder()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A fresh folder for one EditMemory store."""
    return tmp_path / "store"
