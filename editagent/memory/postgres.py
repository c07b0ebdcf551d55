"""The edit store on PostgreSQL with pgvector: one table of edits for every namespace, shared by several hosts.

Same contract as the embedded store (``sqlite_store`` + FAISS): every write is one transaction, history is kept as
rows, at most one live edit per (namespace, subject, relation), by ``Edit.key`` (a partial unique index). Writers of
one fact serialise on a transaction-scoped advisory lock of its key, so two hosts superseding the same fact at once
leave exactly one live row, the later one superseding the earlier. Embeddings live in a ``vector(dim)`` column with
an HNSW index (cosine) over live rows; a namespace small enough to scan exactly is searched exactly
(``EXACT_SCAN_ROWS``), since an approximate index filtered to one namespace could miss what a scan finds. API keys
live in ``editagent_api_keys``, hashed, as in the embedded store.

The schema is created on first use and versioned (``editagent_schema_version``); a database written by a newer
editagent is refused rather than misread. Needs ``pip install 'editagent[postgres]'`` (psycopg 3) and the
``vector`` extension in the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np

from editagent.memory.backend import Scored, local_home, redacted, rekeyed, where
from editagent.memory.keystore import KeyStore
from editagent.schema import Edit, EditError, StoredEdit

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: subjects keyed by names.name_key
EXACT_SCAN_ROWS = 20_000  # live rows of a namespace up to which search scans exactly
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 100
_SCHEMA_LOCK = 7123401  # the advisory lock held while creating tables

_COLUMNS = ("id, namespace, subject, aliases, relation, object, previous_object, sentence, created_at, source, "
            "metadata, status, superseded_by, ended_at")


_BASE_SCHEMA = [
    "CREATE EXTENSION IF NOT EXISTS vector",
    "CREATE TABLE IF NOT EXISTS editagent_schema_version (version integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS editagent_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS editagent_api_keys (
        id text PRIMARY KEY,
        key_hash text NOT NULL,
        namespaces jsonb NOT NULL,
        scope text NOT NULL CHECK (scope IN ('read', 'write')),
        label text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL,
        revoked_at timestamptz)""",
]


def _edits_schema(dim: int) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS editagent_edits (
            seq bigserial PRIMARY KEY,
            id text NOT NULL UNIQUE,
            namespace text NOT NULL,
            subject text NOT NULL,
            subject_key text NOT NULL,
            aliases jsonb NOT NULL DEFAULT '[]',
            relation text NOT NULL,
            relation_key text NOT NULL,
            object text NOT NULL,
            previous_object text,
            sentence text NOT NULL,
            created_at timestamptz NOT NULL,
            source text NOT NULL,
            metadata jsonb NOT NULL,
            status text NOT NULL CHECK (status IN ('live', 'superseded', 'deleted')),
            superseded_by text,
            ended_at timestamptz,
            embedding vector({dim}) NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS editagent_edits_namespace_status ON editagent_edits (namespace, status)",
        "CREATE INDEX IF NOT EXISTS editagent_edits_key ON editagent_edits (namespace, subject_key, relation_key)",
        "CREATE UNIQUE INDEX IF NOT EXISTS editagent_edits_one_live_per_key "
        "ON editagent_edits (namespace, subject_key, relation_key) WHERE status = 'live'",
        f"CREATE INDEX IF NOT EXISTS editagent_edits_embedding ON editagent_edits USING hnsw "
        f"(embedding vector_cosine_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
        "WHERE status = 'live'",
    ]


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.9g}" for x in vector) + "]"  # 9 digits: float32 exactly


def _lock_id(namespace: str, subject_key: str, relation_key: str) -> int:
    digest = hashlib.blake2b(f"{namespace}\0{subject_key}\0{relation_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _row_to_stored(row: tuple[Any, ...]) -> StoredEdit:
    (edit_id, namespace, subject, aliases, relation, obj, previous, sentence, created_at, source, metadata, status,
     superseded_by, ended_at) = row
    return StoredEdit.model_construct(
        id=edit_id, namespace=namespace, subject=subject, aliases=tuple(aliases), relation=relation, object=obj,
        previous_object=previous, sentence=sentence, created_at=created_at.astimezone(UTC), source=source,
        metadata=metadata, status=status, superseded_by=superseded_by,
        ended_at=ended_at.astimezone(UTC) if ended_at else None)


class PostgresEdits:
    """All SQL of the PostgreSQL store, over one connection (thread-safe within a process)."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: PLC0415 - an optional extra
        except ImportError:
            raise EditError("store: a postgresql:// store needs psycopg; pip install 'editagent[postgres]'") from None
        self.location = redacted(url)
        self.home = local_home(url)
        self.keys: KeyStore = self  # the key table lives beside the edits
        self.dim = 0
        self.exact_rows = EXACT_SCAN_ROWS
        self.ef_search = HNSW_EF_SEARCH
        self._session_ef = -1  # the hnsw.ef_search this connection has set
        self._lock = threading.RLock()
        self._counts: dict[str, tuple[int, int]] = {}
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as error:
            raise EditError(f"store: cannot connect to {self.location} ({_without_secrets(error, url)})") from None
        with self.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))  # one creator of the schema at a time
            for statement in _BASE_SCHEMA:
                cur.execute(statement)
            cur.execute("SELECT version FROM editagent_schema_version")
            found = cur.fetchone()
            if found is None:
                cur.execute("INSERT INTO editagent_schema_version VALUES (%s)", (SCHEMA_VERSION,))
                cur.execute("INSERT INTO editagent_meta VALUES ('version', '0') ON CONFLICT DO NOTHING")
            elif found[0] > SCHEMA_VERSION:
                raise EditError(f"store: schema version {found[0]} is newer than this editagent's {SCHEMA_VERSION}; "
                                "upgrade editagent to open it")
            elif found[0] < SCHEMA_VERSION:
                _rekey(cur)
                cur.execute("UPDATE editagent_schema_version SET version = %s", (SCHEMA_VERSION,))

    def open_edits(self, dim: int, index: str = "auto") -> None:
        """Create the edits table for ``dim``-dimensional embeddings (once). ``index``: "flat" always scans
        exactly, "hnsw" always uses the HNSW index, "auto" scans namespaces up to ``EXACT_SCAN_ROWS`` live edits."""
        self.dim = dim
        self.exact_rows = {"flat": 2**62, "hnsw": -1}.get(index, EXACT_SCAN_ROWS)
        with self.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _edits_schema(dim):
                cur.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock, self._db.transaction(), self._db.cursor() as cursor:
            yield cursor

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    # -- metadata ----------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM editagent_meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta_once(self, key: str, value: str) -> str:
        with self.transaction() as cur:
            cur.execute("INSERT INTO editagent_meta VALUES (%s, %s) ON CONFLICT DO NOTHING", (key, value))
            cur.execute("SELECT value FROM editagent_meta WHERE key = %s", (key,))
            return str(cur.fetchone()[0])

    def data_version(self) -> int:
        """Grows with every write from any host: what caches built from the store are keyed by."""
        return int(self._query("SELECT value FROM editagent_meta WHERE key = 'version'")[0][0])

    # -- writing ---------------------------------------------------------------------------------------------

    def insert(self, edits: Sequence[Edit], vectors: np.ndarray) -> None:
        """Insert edits in one transaction, superseding the live edit on each key; all or nothing.

        Set-based, so a batch costs a few round trips, not three per edit: the keys' advisory locks in one sorted
        statement (one order for every writer: no deadlock between batches), then the live edits the batch
        supersedes, then the rows. Two edits on one key within the batch: the earlier is stored superseded by the
        later, as if they had come one after the other.
        """
        import psycopg  # noqa: PLC0415

        now = datetime.now(UTC)
        rows = [StoredEdit.of(edit) for edit in edits]
        first: dict[tuple[str, str, str], str] = {}
        latest: dict[tuple[str, str, str], int] = {}
        for position, row in enumerate(rows):
            first.setdefault(row.key, row.id)
            if row.key in latest:
                earlier = latest[row.key]
                rows[earlier] = rows[earlier].model_copy(
                    update={"status": "superseded", "superseded_by": row.id, "ended_at": now})
            latest[row.key] = position
        keys = sorted(first)
        try:
            with self.transaction() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM unnest(%s::bigint[]) AS k "
                            "ORDER BY k) AS sorted", (sorted(_lock_id(*key) for key in keys),))
                cur.execute("UPDATE editagent_edits AS e SET status = 'superseded', superseded_by = v.new_id, "
                            "ended_at = %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                            "AS v(namespace, subject_key, relation_key, new_id) WHERE e.namespace = v.namespace "
                            "AND e.subject_key = v.subject_key AND e.relation_key = v.relation_key "
                            "AND e.status = 'live'",
                            (now, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                             [first[k] for k in keys]))
                cur.executemany(f"INSERT INTO editagent_edits ({_INSERTED}) VALUES ({_MARKS})",
                                [_values(row, vector) for row, vector in zip(rows, vectors, strict=True)])
                _bump(cur)
        except psycopg.errors.UniqueViolation as error:
            duplicate = next((e.id for e in edits if e.id in str(error)), None)
            raise EditError(f"id: {duplicate or 'an id'!r} is already stored; ids must be unique "
                            "(leave id out to get a fresh one)") from None

    def restore(self, rows: Sequence[StoredEdit], vectors: np.ndarray) -> None:
        """Write copied rows as they are (status, ids and times kept), in one transaction: ``editagent store copy``."""
        import psycopg  # noqa: PLC0415

        try:
            with self.transaction() as cur:
                cur.executemany(f"INSERT INTO editagent_edits ({_INSERTED}) VALUES ({_MARKS})",
                                [_values(row, vector) for row, vector in zip(rows, vectors, strict=True)])
                _bump(cur)
        except psycopg.errors.UniqueViolation as error:
            raise EditError("id: an edit being copied is already stored, or its key already has a live edit, in the "
                            f"destination; copy into an empty namespace ({str(error).splitlines()[0]})") from None

    def delete(self, edit_id: str) -> str | None:
        """Mark a live edit deleted; its namespace, or None when it is not live."""
        with self.transaction() as cur:
            cur.execute("UPDATE editagent_edits SET status = 'deleted', ended_at = %s "
                        "WHERE id = %s AND status = 'live' RETURNING namespace", (datetime.now(UTC), edit_id))
            found = cur.fetchone()
            if found is not None:
                _bump(cur)
        return None if found is None else str(found[0])

    # -- reading ---------------------------------------------------------------------------------------------

    def get(self, edit_id: str) -> StoredEdit | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM editagent_edits WHERE id = %s", (edit_id,))
        return _row_to_stored(rows[0]) if rows else None

    def rows(self, namespace: str | None, *, include_history: bool = False, subject: str | None = None,
             relation: str | None = None) -> list[StoredEdit]:
        clause, params = where(namespace, include_history, subject, relation, mark="%s")
        return [_row_to_stored(row) for row in
                self._query(f"SELECT {_COLUMNS} FROM editagent_edits {clause} ORDER BY seq", params)]

    def count(self, namespace: str | None, *, include_history: bool = False) -> int:
        clause, params = where(namespace, include_history, mark="%s")
        return int(self._query(f"SELECT count(*) FROM editagent_edits {clause}", params)[0][0])

    def _live_count(self, namespace: str) -> int:
        """Live edits of a namespace, counted again only after a write (a count scans the namespace's rows)."""
        version = self.data_version()
        cached = self._counts.get(namespace)
        if cached is None or cached[0] != version:
            cached = self._counts[namespace] = (version, self.count(namespace))
        return cached[1]

    def namespaces(self) -> list[str]:
        return [row[0] for row in self._query("SELECT DISTINCT namespace FROM editagent_edits ORDER BY namespace")]

    def search(self, vectors: np.ndarray, namespace: str, limit: int, *, include_history: bool = False) -> list[Scored]:
        """Per query, up to ``limit`` (cosine, edit) of the namespace, best first: one statement per query.

        Exact: ordering by ``(embedding <=> q) + 0``, which no index serves, makes the planner scan; otherwise
        ordering by ``embedding <=> q`` lets it use the HNSW index, with the session's ``hnsw.ef_search``.
        """
        exact = include_history or self._live_count(namespace) <= self.exact_rows
        sql = _search_sql(exact, include_history)
        results = []
        with self._lock, self._db.cursor() as cur:
            if not exact and self._session_ef != self.ef_search:
                cur.execute(f"SET hnsw.ef_search = {int(self.ef_search)}")
                self._session_ef = self.ef_search
            for vector in vectors:
                literal = _vector_literal(vector)
                cur.execute(sql, (literal, namespace, literal, limit))
                results.append([(float(row[-1]), _row_to_stored(row[:-1])) for row in cur.fetchall()])
        return results

    def dump(self, namespace: str) -> tuple[list[StoredEdit], np.ndarray]:
        """Every edit of a namespace, history included, with its embedding, in creation order."""
        found = self._query(f"SELECT {_COLUMNS}, embedding::text FROM editagent_edits WHERE namespace = %s "
                            "ORDER BY seq", (namespace,))
        matrix = np.array([json.loads(row[-1]) for row in found], dtype=np.float32).reshape(len(found), self.dim)
        return [_row_to_stored(row[:-1]) for row in found], matrix

    # -- API keys (editagent.keys): only their hashes are stored ---------------------------------------------

    def insert_key(self, key_id: str, key_hash: str, namespaces: Sequence[str], scope: str, label: str) -> None:
        with self.transaction() as cur:
            cur.execute("INSERT INTO editagent_api_keys (id, key_hash, namespaces, scope, label, created_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        (key_id, key_hash, json.dumps(list(namespaces)), scope, label, datetime.now(UTC)))

    def key_rows(self, key_id: str | None = None) -> list[dict[str, Any]]:
        clause, params = ("WHERE id = %s", [key_id]) if key_id is not None else ("", [])
        found = self._query(f"SELECT id, key_hash, namespaces, scope, label, created_at, revoked_at "
                            f"FROM editagent_api_keys {clause} ORDER BY created_at, id", params)
        return [{"id": row[0], "key_hash": row[1], "namespaces": list(row[2]), "scope": row[3], "label": row[4],
                 "created_at": _iso(row[5]), "revoked_at": _iso(row[6])} for row in found]

    def revoke_key(self, key_id: str) -> bool:
        with self.transaction() as cur:
            cur.execute("UPDATE editagent_api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                        (datetime.now(UTC), key_id))
            return cur.rowcount == 1

    def restore_keys(self, rows: Sequence[dict[str, Any]]) -> None:
        with self.transaction() as cur:
            for row in rows:
                cur.execute("INSERT INTO editagent_api_keys (id, key_hash, namespaces, scope, label, created_at, "
                            "revoked_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (row["id"], row["key_hash"], json.dumps(row["namespaces"]), row["scope"], row["label"],
                             row["created_at"], row["revoked_at"]))


def _search_sql(exact: bool, include_history: bool) -> str:
    """One query's search: the nearest rows' numbers first (narrow rows to sort), then their columns. Parameters:
    the query vector, the namespace, the query vector again, the limit."""
    status = "" if include_history else "AND status = 'live'"
    order = "(embedding <=> %s::vector) + 0" if exact else "embedding <=> %s::vector"
    return (f"SELECT {', '.join('e.' + c for c in _COLUMNS.split(', '))}, 1 - near.distance FROM "
            f"(SELECT seq, embedding <=> %s::vector AS distance FROM editagent_edits WHERE namespace = %s {status} "
            f"ORDER BY {order} LIMIT %s) AS near JOIN editagent_edits AS e USING (seq) ORDER BY near.distance")


_INSERTED = ("id, namespace, subject, subject_key, aliases, relation, relation_key, object, previous_object, "
             "sentence, created_at, source, metadata, status, superseded_by, ended_at, embedding")
_MARKS = ", ".join(["%s"] * 16 + ["%s::vector"])


def _values(row: StoredEdit, vector: np.ndarray) -> tuple[Any, ...]:
    namespace, subject_key, relation_key = row.key
    return (row.id, namespace, row.subject, subject_key, json.dumps(list(row.aliases)), row.relation, relation_key,
            row.object, row.previous_object, row.sentence, row.created_at, row.source,
            json.dumps(row.metadata, sort_keys=True), row.status, row.superseded_by, row.ended_at,
            _vector_literal(vector))


def _rekey(cur: Any) -> None:
    """Key subjects by ``names.name_key`` (version 1 keyed them by case alone): of two live edits that now share a
    key ("The Beatles" and "Beatles" on one relation), the older is superseded by the newer, as a write would have."""
    cur.execute("SELECT to_regclass('editagent_edits') IS NOT NULL")
    if not cur.fetchone()[0]:
        return
    cur.execute("SELECT seq, id, namespace, subject, relation_key, status FROM editagent_edits ORDER BY seq")
    keys, superseded = rekeyed(cur.fetchall())
    cur.execute("DROP INDEX IF EXISTS editagent_edits_one_live_per_key")
    cur.executemany("UPDATE editagent_edits SET subject_key = %s WHERE seq = %s", keys)
    cur.executemany("UPDATE editagent_edits SET status = 'superseded', superseded_by = %s, ended_at = now() "
                    "WHERE id = %s", superseded)
    cur.execute("CREATE UNIQUE INDEX editagent_edits_one_live_per_key "
                "ON editagent_edits (namespace, subject_key, relation_key) WHERE status = 'live'")
    if superseded:
        _bump(cur)
        logger.info("store: %d edit(s) superseded by a later edit of the same entity under another name",
                    len(superseded))


def _bump(cur: Any) -> None:
    """Count a write, in the writer's transaction: readers on every host key their caches by this."""
    cur.execute("UPDATE editagent_meta SET value = (value::bigint + 1)::text WHERE key = 'version'")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _without_secrets(error: Exception, url: str) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.replace(url, redacted(url))
