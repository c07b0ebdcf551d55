"""The durable half of the memory: one SQLite file (WAL) holding every edit ever made.

SQLite is the source of truth: embeddings are stored here too, so a lost or
corrupt FAISS file is rebuilt without re-embedding. A partial unique index
keeps at most one live edit per (namespace, subject, relation) even when
several processes write at once.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from editagent.memory.backend import rekeyed, where
from editagent.schema import Edit, EditError, StoredEdit

SQLITE_FILE = "edits.sqlite3"  # in the store's folder
SCHEMA_VERSION = "4"  # 2: the aliases column; 3: the api_keys table; 4: subjects keyed by names.name_key
_OPEN_TIMEOUT_S = 60.0  # how long a write or the switch to WAL waits for other processes

logger = logging.getLogger(__name__)

_ONE_LIVE_PER_KEY = ("CREATE UNIQUE INDEX IF NOT EXISTS edits_one_live_per_key "
                     "ON edits (namespace, subject_key, relation_key) WHERE status = 'live'")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edits (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    subject TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    relation TEXT NOT NULL,
    relation_key TEXT NOT NULL,
    object TEXT NOT NULL,
    previous_object TEXT,
    sentence TEXT NOT NULL,
    created_at TEXT NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('live', 'superseded', 'deleted')),
    superseded_by TEXT,
    ended_at TEXT,
    embedding BLOB NOT NULL,
    aliases TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS edits_namespace_status ON edits (namespace, status);
CREATE INDEX IF NOT EXISTS edits_key ON edits (namespace, subject_key, relation_key);
{_ONE_LIVE_PER_KEY};
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    namespaces TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    label TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""

_COLUMNS = ("id, namespace, subject, aliases, relation, object, previous_object, sentence, created_at, source, "
            "metadata, status, superseded_by, ended_at")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an older editagent to ``SCHEMA_VERSION`` (in the caller's transaction)."""
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    if int(version) > int(SCHEMA_VERSION):
        raise EditError(f"store: schema version {version} is newer than this editagent's {SCHEMA_VERSION}; "
                        "upgrade editagent to open it")
    columns = {row[1] for row in db.execute("PRAGMA table_info(edits)")}
    if "aliases" not in columns:  # version 1
        db.execute("ALTER TABLE edits ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]'")
    # version 2 lacks api_keys: the schema's CREATE TABLE IF NOT EXISTS, run just before this, has added it
    if int(version) < 4:
        _rekey(db)
    if version != SCHEMA_VERSION:
        logger.info("store schema %s -> %s", version, SCHEMA_VERSION)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))


def _rekey(db: sqlite3.Connection) -> None:
    """Key subjects by ``names.name_key`` (version 3 keyed them by case alone): of two live edits that now share a
    key ("The Beatles" and "Beatles" on one relation), the older is superseded by the newer, as a write would have."""
    rows = db.execute("SELECT rowid, id, namespace, subject, relation_key, status FROM edits ORDER BY rowid")
    keys, superseded = rekeyed(rows.fetchall())
    db.execute("DROP INDEX IF EXISTS edits_one_live_per_key")
    db.executemany("UPDATE edits SET subject_key = ? WHERE rowid = ?", keys)
    now = _now()
    db.executemany("UPDATE edits SET status = 'superseded', superseded_by = ?, ended_at = ? WHERE id = ?",
                   [(newer, now, older) for newer, older in superseded])
    db.execute(_ONE_LIVE_PER_KEY)
    if superseded:
        logger.info("store: %d edit(s) superseded by a later edit of the same entity under another name",
                    len(superseded))


def _insert_row(db: sqlite3.Connection, row: StoredEdit, vector: np.ndarray) -> int:
    """Write one row as it is (a new edit is ``StoredEdit.of(edit)``: live); its rowid."""
    namespace, subject_key, relation_key = row.key
    cursor = db.execute(
        "INSERT INTO edits (id, namespace, subject, subject_key, aliases, relation, relation_key, object, "
        "previous_object, sentence, created_at, source, metadata, status, superseded_by, ended_at, embedding) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row.id, namespace, row.subject, subject_key, json.dumps(list(row.aliases)), row.relation, relation_key,
         row.object, row.previous_object, row.sentence, row.created_at.isoformat(), row.source,
         json.dumps(row.metadata, sort_keys=True), row.status, row.superseded_by,
         row.ended_at.isoformat() if row.ended_at else None, np.asarray(vector, dtype=np.float32).tobytes()))
    return int(cursor.lastrowid)


def _row_to_stored(row: sqlite3.Row) -> StoredEdit:
    ended = row["ended_at"]
    return StoredEdit.model_construct(  # rows were validated on the way in; re-validating 1M rows is wasted time
        subject=row["subject"], aliases=tuple(json.loads(row["aliases"])), relation=row["relation"],
        object=row["object"],
        previous_object=row["previous_object"], sentence=row["sentence"], namespace=row["namespace"],
        id=row["id"], created_at=datetime.fromisoformat(row["created_at"]), source=row["source"],
        metadata=json.loads(row["metadata"]), status=row["status"], superseded_by=row["superseded_by"],
        ended_at=datetime.fromisoformat(ended) if ended else None,
    )


class SQLiteEdits:
    """All SQL of the memory. Thread-safe within a process; WAL makes it safe across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path.parent)  # the store is the folder holding the file
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), timeout=_OPEN_TIMEOUT_S, check_same_thread=False,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._enable_wal(deadline=time.monotonic() + _OPEN_TIMEOUT_S)
        self._db.execute("PRAGMA synchronous=FULL")  # a committed edit survives power loss, not just a crash
        self._db.execute(f"PRAGMA busy_timeout={int(_OPEN_TIMEOUT_S * 1000)}")
        with self.transaction() as db:
            # statement by statement: executescript would commit outside our transaction
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            _migrate(db)

    @classmethod
    def in_folder(cls, folder: Path) -> SQLiteEdits:
        """The SQL side of the embedded store in ``folder`` (made if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / SQLITE_FILE)

    def _enable_wal(self, deadline: float) -> None:
        """Switch the file to WAL, retrying while another process holds it.

        The switch needs an exclusive lock, and when several processes open a fresh store at once
        SQLite answers "database is locked" at once instead of waiting (its busy timeout does not
        apply), so the open would fail although the other process is done a moment later.
        """
        delay = 0.002
        while True:
            try:
                mode = str(self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0])
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        if mode.lower() != "wal":
            logger.warning("%s stays in %s journal mode (WAL is not supported here): writers from several "
                           "processes will wait for each other's readers", self.path, mode)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back whole on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection commits: the cue to re-sync the in-memory index."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta_once(self, key: str, value: str) -> str:
        """Store ``value`` unless the key exists; return what is stored."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            return db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def insert(self, edits: Sequence[Edit], vectors: np.ndarray) -> list[tuple[int, str | None]]:
        """Insert edits in one transaction, superseding older live edits on the same key.

        Returns, per edit, (its rowid, the id of the edit it superseded or None). Any
        failure (e.g. a duplicate id) rolls the whole batch back: nothing is half-written.
        """
        results: list[tuple[int, str | None]] = []
        with self.transaction() as db:
            for edit, vector in zip(edits, vectors, strict=True):
                namespace, subject_key, relation_key = edit.key
                old = db.execute(
                    "SELECT id FROM edits WHERE namespace=? AND subject_key=? AND relation_key=? AND status='live'",
                    (namespace, subject_key, relation_key),
                ).fetchone()
                if old:
                    db.execute("UPDATE edits SET status='superseded', superseded_by=?, ended_at=? WHERE id=?",
                               (edit.id, _now(), old[0]))
                try:
                    rowid = _insert_row(db, StoredEdit.of(edit), vector)
                except sqlite3.IntegrityError as error:
                    raise EditError(f"id: {edit.id!r} is already stored; ids must be unique "
                                    "(leave id out to get a fresh one)") from error
                results.append((rowid, old[0] if old else None))
        return results

    def restore(self, rows: Sequence[StoredEdit], vectors: np.ndarray) -> None:
        """Write copied rows as they are (status, ids and times kept), in one transaction: ``editagent store copy``."""
        with self.transaction() as db:
            for row, vector in zip(rows, vectors, strict=True):
                try:
                    _insert_row(db, row, vector)
                except sqlite3.IntegrityError as error:
                    raise EditError(f"id: {row.id!r} is already stored, or its key already has a live edit, in "
                                    "the destination; copy into an empty namespace") from error

    def delete(self, edit_id: str) -> tuple[int, str] | None:
        """Mark a live edit deleted; (rowid, namespace), or None when it is not live."""
        with self.transaction() as db:
            row = db.execute("SELECT rowid, namespace FROM edits WHERE id=? AND status='live'",
                             (edit_id,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE edits SET status='deleted', ended_at=? WHERE id=?", (_now(), edit_id))
        return int(row[0]), str(row[1])

    def get(self, edit_id: str) -> StoredEdit | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM edits WHERE id=?", (edit_id,)).fetchone()
        return _row_to_stored(row) if row else None

    def rows(self, namespace: str | None, *, include_history: bool = False, subject: str | None = None,
             relation: str | None = None) -> list[StoredEdit]:
        """Edits in creation order, filtered by namespace (None: all), status and key."""
        clause, params = where(namespace, include_history, subject, relation)
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM edits {clause} ORDER BY rowid", params).fetchall()
        return [_row_to_stored(row) for row in rows]

    def by_rowids(self, rowids: Iterable[int], namespace: str, *, include_history: bool) -> dict[int, StoredEdit]:
        ids = [int(i) for i in rowids]
        if not ids:
            return {}
        status = "" if include_history else "AND status = 'live'"
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT rowid, {_COLUMNS} FROM edits WHERE rowid IN ({marks}) AND namespace = ? {status}",
                (*ids, namespace),
            ).fetchall()
        return {int(row["rowid"]): _row_to_stored(row) for row in rows}

    def vectors(self, namespace: str, *, include_history: bool = False, rowids: Sequence[int] | None = None,
                dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, embeddings) of a namespace's edits, for rebuilding or exact search."""
        status = "" if include_history else "AND status = 'live'"
        params: list[object] = [namespace]
        only = ""
        if rowids is not None:
            only = f"AND rowid IN ({','.join('?' * len(rowids))})"
            params.extend(int(i) for i in rowids)
        with self._lock:
            rows = self._db.execute(
                f"SELECT rowid, embedding FROM edits WHERE namespace = ? {status} {only} ORDER BY rowid", params
            ).fetchall()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, matrix

    def live_rowids(self, namespace: str) -> np.ndarray:
        with self._lock:
            rows = self._db.execute("SELECT rowid FROM edits WHERE namespace=? AND status='live' ORDER BY rowid",
                                    (namespace,)).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def namespaces(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT DISTINCT namespace FROM edits ORDER BY namespace")]

    def count(self, namespace: str | None = None, *, include_history: bool = False) -> int:
        clause, params = where(namespace, include_history)
        with self._lock:
            return int(self._db.execute(f"SELECT count(*) FROM edits {clause}", params).fetchone()[0])

    # -- API keys (editagent.keys): only their hashes are stored ----------------------------------

    def insert_key(self, key_id: str, key_hash: str, namespaces: Sequence[str], scope: str, label: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO api_keys (id, key_hash, namespaces, scope, label, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (key_id, key_hash, json.dumps(list(namespaces)), scope, label,
                                                     _now()))

    def key_rows(self, key_id: str | None = None) -> list[dict[str, object]]:
        """API key rows (all, or the one with ``key_id``), oldest first; ``namespaces`` decoded."""
        clause, params = ("WHERE id = ?", [key_id]) if key_id is not None else ("", [])
        with self._lock:
            rows = self._db.execute(f"SELECT id, key_hash, namespaces, scope, label, created_at, revoked_at "
                                    f"FROM api_keys {clause} ORDER BY created_at, id", params).fetchall()
        return [{**dict(row), "namespaces": json.loads(row["namespaces"])} for row in rows]

    def restore_keys(self, rows: Sequence[dict[str, object]]) -> None:
        """Copied key rows (hashes only), as they are; a key already here is left alone."""
        with self.transaction() as db:
            for row in rows:
                db.execute("INSERT OR IGNORE INTO api_keys (id, key_hash, namespaces, scope, label, created_at, "
                           "revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (row["id"], row["key_hash"], json.dumps(row["namespaces"]), row["scope"], row["label"],
                            row["created_at"], row["revoked_at"]))

    def revoke_key(self, key_id: str) -> bool:
        """Mark a key revoked; False when there is no such unrevoked key."""
        with self.transaction() as db:
            cursor = db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                (_now(), key_id))
        return cursor.rowcount == 1
