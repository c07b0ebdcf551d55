"""EditMemory: durable, searchable, namespaced edits, on an embedded store (SQLite + FAISS, the default) or on
PostgreSQL with pgvector (a ``postgresql://`` URL). Checking input, embedding and bookkeeping live here; storing and
searching live in the backend (``editagent.memory.backend``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from editagent.memory.backend import EditBackend, is_postgres_url, open_backend, resolve_store_path
from editagent.memory.index import IndexKind
from editagent.schema import (
    DEFAULT_NAMESPACE,
    MAX_SEARCH_LIMIT,
    Edit,
    EditError,
    SearchHit,
    StoredEdit,
    check_namespace,
)

logger = logging.getLogger(__name__)

MAX_BATCH = 100_000
MAX_QUERY_CHARS = 2_000
_EMBED_CHUNK = 256
_KEYED_READS = 64  # a batch on more keys reads its namespaces' live edits whole: fewer round trips


class Written(BaseModel):
    """One stored row and the id of the live edit it superseded on its key (None: the key held none)."""

    model_config = ConfigDict(frozen=True)

    edit: StoredEdit
    superseded: str | None = None


class SupportsEncode(Protocol):
    """What the memory needs of an embedder: a name, a dimension and unit-length vectors."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = ..., progress: bool = ...) -> np.ndarray: ...


class LazyEmbedder:
    """An embedder loaded on first use: opening a store, listing and forgetting edits never load the model.

    ``load`` makes the real embedder. Its dimension is taken from the store it opens (``EditMemory`` reads it
    from the store's meta when the store was embedded with ``name``), so only embedding or searching loads the
    model, and a model that then turns out to make another dimension is refused. ``encode`` runs one call at a
    time, so threads may share it (tokenizers are not safe to call from several threads at once).
    """

    def __init__(self, name: str, load: Callable[[], SupportsEncode]) -> None:
        self.name = name
        self._load = load
        self._dim: int | None = None
        self._model: SupportsEncode | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def expect(self, name: str | None, dim: str | int | None) -> None:
        """Take the dimension a store recorded, when it was embedded with this embedder's name."""
        if self._model is None and name == self.name and dim is not None:
            self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else self.model.dim

    @property
    def model(self) -> SupportsEncode:
        with self._lock:
            if self._model is None:
                logger.info("loading the embedder %s", self.name)
                model = self._load()
                if self._dim is not None and model.dim != self._dim:
                    raise EditError(f"embedder: this store holds {self._dim}-dimensional embeddings from "
                                    f"{self.name!r}, but the loaded model makes {model.dim}")
                self._model, self._dim = model, model.dim
            return self._model

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        model = self.model
        with self._lock:
            return model.encode(texts, batch_size=batch_size, progress=progress)


class SearchMany(Protocol):
    def __call__(self, queries: Sequence[str], *, namespace: str = ..., limit: int = ...) -> list[list[SearchHit]]: ...


def search_per_namespace(search_many: SearchMany, queries: Sequence[str], namespaces: Sequence[str],
                         limit: int) -> list[list[SearchHit]]:
    """Each query's best ``limit`` hits in its own namespace: one search per namespace."""
    found: list[list[SearchHit]] = [[] for _ in queries]
    for namespace in dict.fromkeys(namespaces):
        positions = [i for i, ns in enumerate(namespaces) if ns == namespace]
        rows = search_many([queries[i] for i in positions], namespace=namespace, limit=limit)
        for position, row in zip(positions, rows, strict=True):
            found[position] = row
    return found


def best_per_namespace(search_many: SearchMany, queries: Sequence[str],
                       namespaces: Sequence[str]) -> list[SearchHit | None]:
    """The top hit for each query in its own namespace (None where there is none): one search per namespace."""
    return [row[0] if row else None for row in search_per_namespace(search_many, queries, namespaces, 1)]


class EditMemory:
    """Edits as facts plus sentences, searched by meaning; one store holds every namespace.

    ``store``: a name under ./memory ("default"), a folder, or ``postgresql://user@host/db`` (pgvector; pip install
    'editagent[postgres]') for a store several hosts share.

    >>> memory = EditMemory("default", embedder=load_embedder())
    >>> memory.add(Edit(subject="Doug TenNapel", relation="country of citizenship", object="United Kingdom"))
    >>> memory.search("Which country is Doug TenNapel a citizen of?", namespace="default", limit=1)
    """

    def __init__(self, store: str | Path = "default", *, embedder: SupportsEncode, index: IndexKind = "auto") -> None:
        self.store: str | Path = store if is_postgres_url(store) else resolve_store_path(store)
        self.embedder = embedder
        self.index_kind = index
        self.backend: EditBackend = open_backend(self.store)
        try:
            self._check_embedder()
            self.backend.open_edits(self.embedder.dim, index)
        except BaseException:
            self.backend.close()  # a refused open must not leak the connection
            raise
        self._lock = threading.RLock()  # guards the write counters below
        self._writes = 0  # this process's own commits, which the embedded store's data_version does not count
        self._namespace_writes: dict[str, int] = {}  # the same, per namespace

    @property
    def path(self) -> Path:
        """A local folder for the store's own files (weight deltas): the store's folder, or one under the cache
        for a database store."""
        return self.backend.home

    @property
    def location(self) -> str:
        """The store, for messages and logs (a URL without its password)."""
        return self.backend.location

    def _check_embedder(self) -> None:
        if isinstance(self.embedder, LazyEmbedder):  # its dimension, known from the store, saves loading it
            self.embedder.expect(self.backend.meta("embedder"), self.backend.meta("embedding_dim"))
        stored_dim = int(self.backend.set_meta_once("embedding_dim", str(self.embedder.dim)))
        stored_name = self.backend.set_meta_once("embedder", self.embedder.name)
        if stored_dim != self.embedder.dim:
            raise EditError(f"embedder: this store holds {stored_dim}-dimensional embeddings from {stored_name!r}, "
                            f"but the given embedder {self.embedder.name!r} makes {self.embedder.dim}; "
                            f"open it with {stored_name!r}")
        if stored_name != self.embedder.name:
            logger.warning("store %s was embedded with %r, searching it with %r", self.location, stored_name,
                           self.embedder.name)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> EditMemory:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def add(self, edits: Edit | Iterable[Edit], *, progress: bool | None = None) -> list[StoredEdit]:
        """Store one edit or a batch, atomically; a newer edit on a key supersedes the live one.

        Returns the stored rows (with their ids); ``write`` also says what each one superseded.
        """
        return [written.edit for written in self.write(edits, progress=progress)]

    def write(self, edits: Edit | Iterable[Edit], *, progress: bool | None = None) -> list[Written]:
        """The one write path: store one edit or a batch, atomically, and say what each row superseded.

        An edit on a key that holds a live edit supersedes it, and gets that edit's object as ``previous_object``
        unless it names one (ripples follow it). A rejected batch writes nothing. This process's writers take turns
        here, so the live edit read first is the one the insert supersedes.
        """
        batch = [edits] if isinstance(edits, Edit) else list(edits)
        self._check_batch(batch)
        if not batch:
            return []
        vectors = self._embed([edit.sentence for edit in batch], progress)
        with self._lock:
            live = self._live_on_keys(batch)
            filled, superseded = [], []
            for edit in batch:
                old = live.get(edit.key)
                if old is not None and edit.previous_object is None:
                    edit = edit.model_copy(update={"previous_object": old.object})
                superseded.append(old.id if old is not None else None)
                filled.append(edit)
                live[edit.key] = StoredEdit.of(edit)
            self.backend.insert(filled, vectors)
            self._count_write({edit.namespace for edit in filled})
        return [Written(edit=StoredEdit.of(edit), superseded=old) for edit, old in zip(filled, superseded, strict=True)]

    def _live_on_keys(self, batch: Sequence[Edit]) -> dict[tuple[str, str, str], StoredEdit]:
        """The live edit on each key the batch writes: one query per key, or one per namespace for a large batch."""
        keys: dict[tuple[str, str, str], Edit] = {}
        for edit in batch:
            keys.setdefault(edit.key, edit)
        if len(keys) <= _KEYED_READS:
            found = (self.backend.rows(edit.namespace, subject=edit.subject, relation=edit.relation)
                     for edit in keys.values())
            rows = [row for result in found for row in result]
        else:
            rows = [row for namespace in {key[0] for key in keys} for row in self.backend.rows(namespace)]
        return {row.key: row for row in rows if row.key in keys}

    def _check_batch(self, batch: list[Any]) -> None:
        if len(batch) > MAX_BATCH:
            raise EditError(f"edits: {len(batch)} in one batch, at most {MAX_BATCH}; split it into smaller batches")
        for position, edit in enumerate(batch):
            if not isinstance(edit, Edit):
                raise EditError(f"edits[{position}]: expected an Edit, got {type(edit).__name__}")
        seen: set[str] = set()  # one pass: list.count per id took minutes on a 100k batch with a late duplicate
        for edit in batch:
            if edit.id in seen:
                raise EditError(f"id: {edit.id!r} appears twice in the batch; ids must be unique")
            seen.add(edit.id)

    def _embed(self, texts: list[str], progress: bool | None) -> np.ndarray:
        show = len(texts) > _EMBED_CHUNK if progress is None else progress
        chunks = [texts[i: i + _EMBED_CHUNK] for i in range(0, len(texts), _EMBED_CHUNK)]
        parts = [self.embedder.encode(chunk) for chunk in tqdm(chunks, desc="embedding edits", disable=not show)]
        vectors = np.concatenate(parts)
        if not np.all(np.isfinite(vectors)):
            raise EditError("embedder: produced non-finite vectors; nothing was stored")
        return vectors

    def delete(self, edit_id: str) -> StoredEdit:
        """Delete a live edit; it stays in history. Raises EditError for an unknown or ended edit."""
        namespace = self.backend.delete(edit_id)
        if namespace is None:
            stored = self.backend.get(edit_id)
            state = f"it is {stored.status}" if stored else "no edit has this id"
            raise EditError(f"id: cannot delete {edit_id!r}: {state}")
        self._count_write({namespace})
        stored = self.backend.get(edit_id)
        assert stored is not None
        return stored

    # -- reading ---------------------------------------------------------------------------------

    def search(self, query: str, *, namespace: str = DEFAULT_NAMESPACE, limit: int = 5,
               include_history: bool = False) -> list[SearchHit]:
        """Top ``limit`` edits of one namespace by cosine similarity to ``query``."""
        return self.search_many([query], namespace=namespace, limit=limit, include_history=include_history)[0]

    def search_many(self, queries: Sequence[str], *, namespace: str = DEFAULT_NAMESPACE, limit: int = 5,
                    include_history: bool = False, vectors: np.ndarray | None = None) -> list[list[SearchHit]]:
        """Batched ``search``: one embedding call and one index call for all queries. ``vectors``: the queries'
        embeddings when the caller already has them (no embedding call then)."""
        check_namespace(namespace)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise EditError(f"limit: {limit!r} is not allowed; use a whole number from 1 to {MAX_SEARCH_LIMIT}")
        for query in queries:
            if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY_CHARS:
                raise EditError(f"query: must be non-empty text of at most {MAX_QUERY_CHARS} characters")
        if not queries:
            return []
        if vectors is None:
            vectors = self.embedder.encode(list(queries))
        found = self.backend.search(vectors, namespace, limit, include_history=include_history)
        # float32 rounding can put a cosine a hair above 1 (a query equal to the sentence): clip it
        return [[SearchHit(id=edit.id, memory=edit.sentence, score=min(score, 1.0), edit=edit) for score, edit in row]
                for row in found]

    def top1(self, queries: Sequence[str], namespaces: Sequence[str]) -> list[SearchHit | None]:
        """The best live edit for each query in its own namespace (None where a namespace is empty).

        This is the retriever the reasoning loops call: one batched search per namespace.
        """
        return best_per_namespace(self.search_many, queries, namespaces)

    def get(self, edit_id: str) -> StoredEdit | None:
        return self.backend.get(edit_id)

    def lookup(self, subject: str, relation: str, *, namespace: str = DEFAULT_NAMESPACE) -> StoredEdit | None:
        """The live edit on exactly (subject, relation), if any: no embedding, no vector search."""
        probe = Edit(subject=subject, relation=relation, object="?", namespace=namespace)
        rows = self.backend.rows(namespace, subject=probe.subject, relation=probe.relation)
        return rows[-1] if rows else None

    def edits(self, namespace: str | None = DEFAULT_NAMESPACE, *, include_history: bool = False) -> list[StoredEdit]:
        """Edits of a namespace (None: every namespace) in creation order; live only unless asked."""
        if namespace is not None:
            check_namespace(namespace)
        return self.backend.rows(namespace, include_history=include_history)

    def export(self, namespace: str = DEFAULT_NAMESPACE, *, include_history: bool = True) -> list[dict[str, Any]]:
        """One namespace's edits as JSON-ready records, oldest first: for backups and moving a user's edits.

        Each record is the edit's fields plus ``status``, ``superseded_by`` and ``ended_at``; write one
        ``json.dumps`` per line for JSONL. Only ``namespace``'s edits, never another's.
        """
        check_namespace(namespace)
        return [stored.model_dump(mode="json")
                for stored in self.backend.rows(namespace, include_history=include_history)]

    def history(self, edit_id: str) -> list[StoredEdit]:
        """Every edit ever made on the same (namespace, subject, relation) as ``edit_id``, oldest first."""
        stored = self.backend.get(edit_id)
        if stored is None:
            raise EditError(f"id: no edit has id {edit_id!r}")
        return self.backend.rows(stored.namespace, include_history=True, subject=stored.subject,
                                 relation=stored.relation)

    def _count_write(self, namespaces: set[str]) -> None:
        with self._lock:
            self._writes += 1
            for namespace in namespaces:
                self._namespace_writes[namespace] = self._namespace_writes.get(namespace, 0) + 1

    def version(self, namespace: str | None = None) -> tuple[int, int]:
        """Changes whenever any process has written the store: what caches built from it are keyed by.
        ``namespace``: changes with this process's writes to that namespace only (and any other process's)."""
        with self._lock:
            writes = self._writes if namespace is None else self._namespace_writes.get(namespace, 0)
        return self.backend.data_version(), writes

    def namespaces(self) -> list[str]:
        return self.backend.namespaces()

    def count(self, namespace: str | None = DEFAULT_NAMESPACE, *, include_history: bool = False) -> int:
        return self.backend.count(namespace, include_history=include_history)

    def rebuild_index(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Rebuild a namespace's FAISS file from SQLite (what opening does by itself when it must). A database
        store keeps its index in the database: nothing to rebuild."""
        check_namespace(namespace)
        rebuild = getattr(self.backend, "rebuild_index", None)
        if rebuild is None:
            raise EditError(f"store: {self.location} keeps its vector index in the database; there is no index "
                            "file to rebuild")
        rebuild(namespace)
