"""Shared fixtures: where the MQuAKE data lives (``EDITAGENT_DATA`` overrides the default beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MQUAKE_DEV_FILE = "MQuAKE-CF-3k-dev600.json"


@pytest.fixture(scope="session")
def mquake_dir() -> Path:
    """The folder holding the MQuAKE files; the test is skipped when they are not there."""
    env = os.environ.get("EDITAGENT_DATA")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "mquake"
    if not (folder / MQUAKE_DEV_FILE).is_file():
        pytest.skip(f"MQuAKE data not found in {folder}; set EDITAGENT_DATA to the folder holding {MQUAKE_DEV_FILE}")
    return folder
