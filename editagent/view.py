"""What a reasoner may read of the store: one protocol (``EditView``) that every reasoning method and scope
detector types against, and the view ``EditAgent`` hands them (``RecallableEdits``).

A reasoner reads and never writes, so the protocol has no write. ``EditMemory`` satisfies it as it is (the
benchmarks hand one over directly); ``RecallableEdits`` leaves out the edits that live only in the weights.

Imports nothing heavy: the store itself loads only when ``top1`` first needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from editagent.schema import DEFAULT_NAMESPACE, MAX_SEARCH_LIMIT, Edit, SearchHit, StoredEdit

if TYPE_CHECKING:
    import numpy as np

    from editagent.memory import EditMemory

__all__ = ["IN_MEMORY_KEY", "EditView", "Encoder", "RecallableEdits", "in_memory"]

# The metadata key ``EditAgent`` sets to False on an edit it put into the weights only.
IN_MEMORY_KEY = "in_memory"


class Encoder(Protocol):
    """Unit-length vectors of texts: the store's embedder, which reasoners also judge relations with."""

    def encode(self, texts: Sequence[str], *, batch_size: int = ..., progress: bool = ...) -> np.ndarray: ...


class EditView(Protocol):
    """Everything a reasoner reads of the store: a namespace's live edits, one exact lookup, a search (batched,
    over vectors it may already have), the best hit per query, the embedder the store searches with, and a
    version that changes whenever a namespace's edits may have (what reasoners key their caches by)."""

    @property
    def embedder(self) -> Encoder: ...

    def version(self, namespace: str | None = ...) -> object: ...

    def edits(self, namespace: str | None = ..., *, include_history: bool = ...) -> list[StoredEdit]: ...

    def lookup(self, subject: str, relation: str, *, namespace: str = ...) -> StoredEdit | None: ...

    def search_many(self, queries: Sequence[str], *, namespace: str = ..., limit: int = ...,
                    vectors: np.ndarray | None = ...) -> list[list[SearchHit]]: ...

    def top1(self, queries: Sequence[str], namespaces: Sequence[str]) -> list[SearchHit | None]: ...


def in_memory(edit: Edit) -> bool:
    """Whether reasoning may use the edit from the store (a weights-only edit is answered by the model)."""
    return edit.metadata.get(IN_MEMORY_KEY, True) is not False


class RecallableEdits:
    """The store as every reasoner sees it: edits that live only in the weights are left out, since the edited
    model answers those hops itself. ``EditAgent`` hands this to whichever reasoning method it runs."""

    def __init__(self, memory: EditMemory) -> None:
        self.memory = memory

    @property
    def embedder(self) -> Encoder:
        return self.memory.embedder

    def version(self, namespace: str | None = None) -> tuple[int, int]:
        return self.memory.version(namespace)

    def edits(self, namespace: str | None = DEFAULT_NAMESPACE, *, include_history: bool = False) -> list[StoredEdit]:
        return [s for s in self.memory.edits(namespace, include_history=include_history) if in_memory(s)]

    def lookup(self, subject: str, relation: str, *, namespace: str = DEFAULT_NAMESPACE) -> StoredEdit | None:
        found = self.memory.lookup(subject, relation, namespace=namespace)
        return found if found is not None and in_memory(found) else None

    def search_many(self, queries: Sequence[str], *, namespace: str = DEFAULT_NAMESPACE, limit: int = 5,
                    vectors: np.ndarray | None = None) -> list[list[SearchHit]]:
        """``EditMemory.search_many`` without weights-only edits: searched deeper until ``limit`` remain."""
        depth = limit
        if vectors is None:  # embedded once, however deep the search goes
            vectors = self.memory.embedder.encode(list(queries))
        while True:
            rows = self.memory.search_many(queries, namespace=namespace, limit=min(depth, MAX_SEARCH_LIMIT),
                                           vectors=vectors)
            kept = [[hit for hit in row if in_memory(hit.edit)][:limit] for row in rows]
            # a row is done when it has its hits, or when the search ran out of edits before ``depth``
            if depth >= MAX_SEARCH_LIMIT or all(len(k) == limit or len(r) < depth for k, r in zip(kept, rows,
                                                                                                   strict=True)):
                return kept
            depth *= 4

    def top1(self, queries: Sequence[str], namespaces: Sequence[str]) -> list[SearchHit | None]:
        """The best recallable edit for each query in its own namespace (None where there is none)."""
        from editagent.memory.edit_memory import best_per_namespace  # noqa: PLC0415 - the store loads FAISS

        return best_per_namespace(self.search_many, queries, namespaces)
