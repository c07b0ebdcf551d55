"""The embedded backend: one SQLite file (the source of truth) and one FAISS index file per namespace.

Write order is the durability contract: an edit is committed to SQLite first, then the FAISS index of its namespace
is patched and saved atomically under a file lock. If a process dies in between, the next reader notices that the
index disagrees with SQLite and patches it from the stored embeddings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

from editagent.memory.backend import Scored
from editagent.memory.index import IndexKind, Kind, VectorIndex, resolve_kind
from editagent.memory.keystore import KeyStore
from editagent.memory.sqlite_store import SQLiteEdits
from editagent.schema import Edit, StoredEdit, check_namespace

logger = logging.getLogger(__name__)


class EmbeddedEdits:
    """SQLite + FAISS in one folder. Threads may share it: a lock guards the in-memory indexes."""

    def __init__(self, path: Path) -> None:
        self.path = self.home = path
        self.location = str(path)
        self.sql = SQLiteEdits.in_folder(path)
        (path / "index").mkdir(exist_ok=True)
        self.dim = 0
        self.index_kind: IndexKind = "auto"
        self._lock = threading.RLock()
        self._indexes: dict[str, VectorIndex] = {}
        self._seen_version = self.sql.data_version()
        self._file_lock = FileLock(str(path / "index.lock"))
        # what the SQL side answers alone
        sql = self.sql
        self.meta, self.set_meta_once, self.get, self.rows = sql.meta, sql.set_meta_once, sql.get, sql.rows
        self.count, self.namespaces, self.data_version = sql.count, sql.namespaces, sql.data_version
        self.keys: KeyStore = sql
        self.close = sql.close

    def open_edits(self, dim: int, index: IndexKind) -> None:
        self.dim, self.index_kind = dim, index

    # -- writing ---------------------------------------------------------------------------------------------

    def insert(self, edits: Sequence[Edit], vectors: np.ndarray) -> None:
        self._write({edit.namespace for edit in edits}, lambda: self.sql.insert(edits, vectors))

    def restore(self, rows: Sequence[StoredEdit], vectors: np.ndarray) -> None:
        self._write({row.namespace for row in rows}, lambda: self.sql.restore(rows, vectors))

    def _write(self, namespaces: set[str], write: Callable[[], object]) -> None:
        with self._lock:
            for namespace in namespaces:
                self._index(namespace)  # load (or rebuild) before writing: a lost file is told apart from a new one
            write()
            self._sync_and_save(namespaces)

    def delete(self, edit_id: str) -> str | None:
        with self._lock:
            found = self.sql.delete(edit_id)
            if found is not None:
                self._sync_and_save({found[1]})
        return None if found is None else found[1]

    # -- reading ---------------------------------------------------------------------------------------------

    def search(self, vectors: np.ndarray, namespace: str, limit: int, *, include_history: bool = False) -> list[Scored]:
        with self._lock:
            if include_history:
                scores, rowids = self._exact_search(vectors, namespace, limit)
            else:
                scores, rowids = self._index(namespace).search(vectors, limit)
        found = self.sql.by_rowids({int(i) for i in rowids.ravel() if i >= 0}, namespace,
                                   include_history=include_history)
        return [[(float(s), found[int(i)]) for s, i in zip(row_scores, row_ids, strict=True) if int(i) in found]
                for row_scores, row_ids in zip(scores, rowids, strict=True)]

    def _exact_search(self, vectors: np.ndarray, namespace: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        rowids, matrix = self.sql.vectors(namespace, include_history=True, dim=self.dim)
        exact = VectorIndex(self.dim, "flat")
        exact.add(rowids, matrix)
        return exact.search(vectors, limit)

    def dump(self, namespace: str) -> tuple[list[StoredEdit], np.ndarray]:
        _, matrix = self.sql.vectors(namespace, include_history=True, dim=self.dim)
        return self.sql.rows(namespace, include_history=True), matrix

    # -- keeping FAISS in step with SQLite ---------------------------------------------------------------

    def _index_file(self, namespace: str) -> Path:
        return self.path / "index" / f"{namespace}.faiss"

    def _index(self, namespace: str) -> VectorIndex:
        """The namespace's index, loaded once and patched whenever SQLite changed under it."""
        version = self.sql.data_version()
        if version != self._seen_version:
            self._seen_version = version
            for known in list(self._indexes):
                self._patch(known)
        if namespace not in self._indexes:
            self._indexes[namespace] = self._load(namespace)
            self._patch(namespace)
        return self._indexes[namespace]

    def _load(self, namespace: str) -> VectorIndex:
        path = self._index_file(namespace)
        expected = self.sql.count(namespace)
        if path.exists():
            try:
                index = VectorIndex.load(path)
                if index.dim == self.dim:
                    return index
                logger.warning("index %s has dimension %d, expected %d: rebuilding it from SQLite", path,
                               index.dim, self.dim)
            except RuntimeError as error:
                logger.warning("index %s is unreadable (%s): rebuilding it from SQLite", path, error)
        elif expected:
            logger.warning("index %s is missing: rebuilding it from SQLite (%d edits)", path, expected)
        return VectorIndex(self.dim, resolve_kind(self.index_kind, expected))

    def _patch(self, namespace: str) -> bool:
        """Add what SQLite has and the index lacks, drop what it no longer has; True if anything changed."""
        index = self._indexes[namespace]
        live = self.sql.live_rowids(namespace)
        have = index.ids()
        missing = np.setdiff1d(live, have, assume_unique=True)
        extra = np.setdiff1d(have, live, assume_unique=True)
        if len(extra):
            index.remove(extra)
        if len(missing):
            rowids, matrix = self.sql.vectors(namespace, rowids=missing.tolist(), dim=self.dim)
            index.add(rowids, matrix)
        grown_kind = resolve_kind(self.index_kind, index.size) if self.index_kind == "auto" else index.kind
        if grown_kind != index.kind or index.tombstones > max(1000, index.size // 10):
            # auto: a namespace that crossed the size threshold moves to the other kind; sketch/HNSW
            # cannot delete, so they are rebuilt once tombstones pile up.
            self._indexes[namespace] = self._rebuilt(namespace, grown_kind)
            return True
        return bool(len(missing) or len(extra))

    def _sync_and_save(self, namespaces: set[str]) -> None:
        with self._file_lock:
            for namespace in sorted(namespaces):
                self._index(namespace)  # loads the index if this process has not yet
                self._patch(namespace)
                index = self._indexes[namespace]
                if index.tombstones:
                    index = self._indexes[namespace] = self._rebuilt(namespace, index.kind)
                index.save(self._index_file(namespace))
        # No `_seen_version = data_version()` here: read after the patch, it would also cover a commit
        # another process made meanwhile, which this index then never picked up. `_index` reads the
        # version before it patches, and this connection's own commits do not change it.

    def _rebuilt(self, namespace: str, kind: Kind) -> VectorIndex:
        index = VectorIndex(self.dim, kind)
        rowids, matrix = self.sql.vectors(namespace, dim=self.dim)
        index.add(rowids, matrix)
        return index

    def rebuild_index(self, namespace: str) -> None:
        check_namespace(namespace)  # it names a file: "../x" must not write outside index/
        with self._lock, self._file_lock:
            self._indexes[namespace] = index = self._rebuilt(
                namespace, resolve_kind(self.index_kind, self.sql.count(namespace)))
            index.save(self._index_file(namespace))

