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


# -- PostgreSQL with pgvector, a real server (the PyPI package pgserver ships both) --------------------------


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A throwaway PostgreSQL server with pgvector for the session. Without pgserver the tests that need it are
    skipped saying so, except where ``EDITAGENT_REQUIRE_POSTGRES`` is set (``make test`` and CI): then they fail."""
    try:
        import pgserver
    except ImportError:
        reason = "PostgreSQL tests need pgserver and psycopg: pip install -e '.[dev]'"
        if os.environ.get("EDITAGENT_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """A fresh, empty database on the session's server, as a postgresql:// URL."""
    from _postgres import new_database

    return new_database(postgres_server)


@pytest.fixture(params=["embedded", "postgres"])
def store(request: pytest.FixtureRequest, store_path: Path) -> str | Path:
    """A fresh store on each backend: a folder (SQLite + FAISS), then a PostgreSQL database."""
    if request.param == "embedded":
        return store_path
    return request.getfixturevalue("postgres_url")
