"""What ``EditMemory`` needs of a place to keep edits, and how a ``store`` argument picks one.

Two backends: the embedded one (``embedded.EmbeddedEdits``: one SQLite file plus a FAISS index per namespace, the
default) and ``postgres.PostgresEdits`` (a ``postgresql://`` URL: one database shared by several hosts). Both keep
the same contract: every write is one transaction, history stays as rows, at most one live edit per (namespace,
subject, relation) compared as ``Edit.key`` does (the subject by ``names.name_key``), and a reader sees every
write any process has committed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from editagent.names import name_key, text_key
from editagent.paths import cache_dir
from editagent.schema import Edit, StoredEdit, check_namespace

if TYPE_CHECKING:
    from editagent.memory.keystore import KeyStore

Scored = list[tuple[float, StoredEdit]]


class EditBackend(Protocol):
    location: str  # for messages and logs: a folder, or the URL without its password
    home: Path  # a local folder for the store's files that are not edits (weight deltas)
    keys: KeyStore  # the store's API keys (hashes), kept apart from the edits

    def meta(self, key: str) -> str | None: ...
    def set_meta_once(self, key: str, value: str) -> str: ...
    def open_edits(self, dim: int, index: Any) -> None: ...
    def insert(self, edits: Sequence[Edit], vectors: np.ndarray) -> None: ...
    def delete(self, edit_id: str) -> str | None: ...
    def get(self, edit_id: str) -> StoredEdit | None: ...
    def rows(self, namespace: str | None, *, include_history: bool = False, subject: str | None = None,
             relation: str | None = None) -> list[StoredEdit]: ...
    def count(self, namespace: str | None, *, include_history: bool = False) -> int: ...
    def namespaces(self) -> list[str]: ...
    def search(self, vectors: np.ndarray, namespace: str, limit: int, *,
               include_history: bool = False) -> list[Scored]: ...
    def data_version(self) -> int: ...
    def dump(self, namespace: str) -> tuple[list[StoredEdit], np.ndarray]: ...
    def restore(self, rows: Sequence[StoredEdit], vectors: np.ndarray) -> None: ...
    def close(self) -> None: ...


def memory_root() -> Path:
    """Where named stores live: ``$EDITAGENT_MEMORY`` or ``./memory``."""
    return Path(os.environ.get("EDITAGENT_MEMORY", "memory"))


def is_postgres_url(store: object) -> bool:
    return isinstance(store, str) and store.startswith(("postgresql://", "postgres://"))


def resolve_store_path(store: str | Path) -> Path:
    """A plain name ("default", "alice") lives under ``memory_root()``; anything path-like is used as given."""
    if isinstance(store, Path) or os.sep in store or "/" in store or store.startswith("."):
        return Path(store)
    return memory_root() / check_namespace(store, field="store")


def redacted(url: str) -> str:
    """A URL without its password, for messages and logs."""
    head, at, tail = url.partition("@")
    if not at or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    user, _, password = credentials.partition(":")
    return f"{scheme}://{user}:***@{tail}" if password else url


def open_backend(store: str | Path) -> EditBackend:
    """The backend ``store`` names: a ``postgresql://`` URL, else a folder (a plain name lives under ./memory)."""
    if is_postgres_url(store):
        from editagent.memory.postgres import PostgresEdits  # noqa: PLC0415 - psycopg is an optional extra

        return PostgresEdits(str(store))
    from editagent.memory.embedded import EmbeddedEdits  # noqa: PLC0415

    return EmbeddedEdits(resolve_store_path(store))


def where(namespace: str | None, include_history: bool, subject: str | None = None, relation: str | None = None,
          *, mark: str = "?") -> tuple[str, list[str]]:
    """A WHERE clause (and its parameters) selecting by namespace (None: all), status and key; ``mark`` is the
    driver's placeholder."""
    clauses, params = [], []
    if namespace is not None:
        clauses.append(f"namespace = {mark}")
        params.append(namespace)
    if not include_history:
        clauses.append("status = 'live'")
    if subject is not None:
        clauses.append(f"subject_key = {mark}")
        params.append(name_key(subject))
    if relation is not None:
        clauses.append(f"relation_key = {mark}")
        params.append(text_key(relation))
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def local_home(url: str) -> Path:
    """A local folder for a database store's files, one per database (never holding the password)."""
    digest = hashlib.sha256(redacted(url).encode()).hexdigest()[:16]
    return cache_dir() / "stores" / digest


def rekeyed(rows: Iterable[tuple[Any, str, str, str, str, str]]) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """For a store keyed by an older subject key: ``rows`` are (row id, edit id, namespace, subject, relation key,
    status) in creation order. Returns each row's (new subject key, row id), and (newer id, older id) for every live
    edit that now shares its key with a later live one (two names of one entity): the older is superseded by it."""
    keys, superseded = [], []
    live: dict[tuple[str, str, str], str] = {}
    for row_id, edit_id, namespace, subject, relation_key, status in rows:
        key = name_key(subject)
        keys.append((key, row_id))
        if status == "live":
            earlier = live.get((namespace, key, relation_key))
            if earlier is not None:
                superseded.append((edit_id, earlier))
            live[(namespace, key, relation_key)] = edit_id
    return keys, superseded
