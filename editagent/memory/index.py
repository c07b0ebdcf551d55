"""A FAISS inner-product index over unit vectors, keyed by integer ids.

Three kinds:

- ``flat``: exact; the default up to 100k vectors per namespace.
- ``sketch``: a 256-bit sign-random-projection sketch (SimHash, FAISS ``IndexLSH``)
  scanned by Hamming distance, whose best ``SKETCH_RERANK`` candidates are re-ranked
  exactly against the stored float vectors (``IndexRefineFlat``). The automatic choice
  for large namespaces: a question sits far closer to its fact than unrelated facts do,
  and a Hamming scan keeps that contrast where a graph index (HNSW) finds no near
  neighbours to walk through (figures: benchmarks/results/memory_bench.md, docs/decisions.md).
- ``hnsw``: kept for users whose data suits it.

Sketch and HNSW indexes cannot remove vectors, so removed ids are kept as tombstones,
filtered at search time, and dropped at the next rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["auto", "flat", "sketch", "hnsw"]
Kind = Literal["flat", "sketch", "hnsw"]
AUTO_SKETCH_THRESHOLD = 100_000
SKETCH_BITS = 256
SKETCH_RERANK = 64
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64


# A few queries gain nothing from OpenMP: FAISS opens a parallel region even to translate one id,
# and on a busy machine its threads wait for cores (docs/decisions.md).
SMALL_BATCH = 8


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (what FAISS wants)."""
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("vectors: every embedding must be finite and non-zero")
    return np.ascontiguousarray(array / norms)


def resolve_kind(kind: IndexKind, expected_size: int) -> Kind:
    if kind == "auto":
        return "sketch" if expected_size >= AUTO_SKETCH_THRESHOLD else "flat"
    return kind


@dataclass
class VectorIndex:
    """Inner-product search over unit vectors with int64 ids."""

    dim: int
    kind: Kind = "flat"
    ef_search: int = HNSW_EF_SEARCH
    _index: faiss.Index = field(init=False, repr=False)
    _tombstones: set[int] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("flat", "sketch", "hnsw"):
            raise ValueError(f"index: unknown kind {self.kind!r}; use flat, sketch, hnsw (or auto in EditMemory)")
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = self.ef_search
        elif self.kind == "sketch":
            inner = faiss.IndexRefineFlat(faiss.IndexLSH(self.dim, SKETCH_BITS, True, False))
            inner.k_factor = SKETCH_RERANK
        else:
            inner = faiss.IndexFlatIP(self.dim)
        self._index = faiss.IndexIDMap2(inner)

    @property
    def size(self) -> int:
        """Vectors that search can return (tombstones excluded)."""
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        vectors = normalise(vectors)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors: expected shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if len(ids):
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray | list[int]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        if self.kind == "flat":
            self._index.remove_ids(ids)
        else:
            self._tombstones.update(int(i) for i in ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k); missing slots have id -1 and score -inf."""
        queries = normalise(queries)
        n = len(queries)
        if self.size == 0 or k <= 0:
            return np.full((n, max(k, 0)), -np.inf, np.float32), np.full((n, max(k, 0)), -1, np.int64)
        fetch = min(k + len(self._tombstones), int(self._index.ntotal))
        with _threads(1 if n <= SMALL_BATCH else None):
            scores, ids = self._index.search(queries, fetch)
        if self.kind == "sketch":  # re-ranked by squared L2; for unit vectors cosine = 1 - d/2
            scores = np.where(ids >= 0, 1.0 - scores / 2.0, -np.inf).astype(np.float32)
        if self._tombstones:
            scores, ids = self._drop_tombstones(scores, ids, k)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores[:, :k], ids[:, :k]

    def _drop_tombstones(self, scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_scores = np.full((len(ids), k), -np.inf, np.float32)
        out_ids = np.full((len(ids), k), -1, np.int64)
        for row, (row_scores, row_ids) in enumerate(zip(scores, ids, strict=True)):
            keep = [j for j, i in enumerate(row_ids) if i >= 0 and int(i) not in self._tombstones][:k]
            out_scores[row, : len(keep)] = row_scores[keep]
            out_ids[row, : len(keep)] = row_ids[keep]
        return out_scores, out_ids

    def save(self, path: Path) -> None:
        """Write atomically (temp file, then rename) so a crash never leaves half an index."""
        if self._tombstones:
            raise RuntimeError("an index with tombstones must be rebuilt before it is saved")
        tmp = path.with_suffix(path.suffix + ".tmp")
        faiss.write_index(self._index, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, ef_search: int = HNSW_EF_SEARCH) -> VectorIndex:
        loaded = faiss.read_index(str(path))
        inner = faiss.downcast_index(loaded.index) if hasattr(loaded, "index") else loaded
        kind: Kind = "flat"
        if isinstance(inner, faiss.IndexHNSWFlat):
            kind = "hnsw"
            inner.hnsw.efSearch = ef_search
        elif isinstance(inner, faiss.IndexRefine):
            kind = "sketch"
            inner.k_factor = SKETCH_RERANK
        index = cls(dim=loaded.d, kind=kind, ef_search=ef_search)
        index._index = loaded if isinstance(loaded, faiss.IndexIDMap2) else faiss.IndexIDMap2(loaded)
        return index

    def ids(self) -> np.ndarray:
        """Every id in the index, tombstones excluded, sorted."""
        all_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if self._tombstones:
            all_ids = all_ids[~np.isin(all_ids, np.fromiter(self._tombstones, np.int64))]
        return np.sort(all_ids)
