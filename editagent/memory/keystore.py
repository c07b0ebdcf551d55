"""Where a store keeps its API keys (``editagent.keys``): only their hashes, in the same database as the edits but
apart from them, so the key ring never opens the edits (nor an embedder, nor a vector index).

Both backends implement it (``SQLiteEdits`` for a folder, ``PostgresEdits`` for a ``postgresql://`` URL); an open
backend hands its own as ``EditBackend.keys``, and ``open_key_store`` opens one alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from editagent.memory.backend import is_postgres_url, resolve_store_path


class KeyStore(Protocol):
    location: str  # for messages and logs: a folder, or the URL without its password

    def insert_key(self, key_id: str, key_hash: str, namespaces: Sequence[str], scope: str, label: str) -> None: ...
    def key_rows(self, key_id: str | None = None) -> list[dict[str, Any]]: ...
    def revoke_key(self, key_id: str) -> bool: ...
    def restore_keys(self, rows: Sequence[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


def open_key_store(store: str | Path) -> KeyStore:
    """The key store of ``store``: a ``postgresql://`` URL, else a folder (a plain name lives under ./memory)."""
    if is_postgres_url(store):
        from editagent.memory.postgres import PostgresEdits  # noqa: PLC0415 - psycopg is an optional extra

        return PostgresEdits(str(store))
    from editagent.memory.sqlite_store import SQLiteEdits  # noqa: PLC0415

    return SQLiteEdits.in_folder(resolve_store_path(store))
