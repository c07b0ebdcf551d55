"""Throwaway PostgreSQL databases (pgvector included) on the session's pgserver server."""

from __future__ import annotations

import itertools
import os
from typing import Any

_numbers = itertools.count()


def new_database(server: Any) -> str:
    """A fresh, empty database on ``server``, as a postgresql:// URL."""
    import psycopg

    name = f"t{os.getpid()}_{next(_numbers)}"
    base = server.get_uri()
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return base.replace("/postgres?", f"/{name}?", 1)
