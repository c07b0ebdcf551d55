"""Shared fixtures: the MQuAKE data (found by ``editagent.eval.data_file``: ``EDITAGENT_DATA``, else the cache)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Idle OpenMP threads sleep instead of spinning. On a small machine shared with other work, spinning threads
# made one MiniLM query take ~0.75 s instead of ~25 ms. Must be set before torch loads; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

@pytest.fixture(scope="session")
def mquake_dir() -> Path:
    """The folder holding the MQuAKE files; the test is skipped, saying why, when they cannot be had."""
    from editagent.eval import MQUAKE_DEV, DataUnavailable, data_file

    try:
        return data_file(MQUAKE_DEV).parent
    except DataUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real packaged all-MiniLM-L6-v2, loaded once per session (it takes several seconds)."""
    from editagent.models import load_embedder

    return load_embedder()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A fresh folder for one EditMemory store."""
    return tmp_path / "store"
