"""Moving a store between backends (embedded <-> PostgreSQL), history, ids and embeddings intact.

``copy_store`` reads each namespace whole (every edit ever made, with its stored embedding, so nothing is
re-embedded), writes it into the destination in one transaction per namespace, reads it back and compares a count
and a SHA-256 over the rows and their embeddings. A destination namespace that already holds edits is refused:
copying never merges two histories. A whole-store copy takes the API keys (their hashes) along too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from editagent.memory.backend import EditBackend, open_backend
from editagent.schema import EditError, StoredEdit, check_namespace

logger = logging.getLogger(__name__)


class CopiedNamespace(BaseModel):
    namespace: str
    edits: int = Field(description="Edits copied, history included.")
    live: int = Field(description="Live edits among them.")
    checksum: str = Field(description="SHA-256 over the rows and their embeddings; equal at both ends.")


class CopyReport(BaseModel):
    source: str
    destination: str
    namespaces: list[CopiedNamespace]
    keys: int = Field(description="API keys copied (whole-store copies only).")


def checksum(rows: Sequence[StoredEdit], vectors: np.ndarray) -> str:
    """A digest of rows (every field, creation order) and their float32 embeddings: equal means copied whole."""
    digest = hashlib.sha256()
    for row, vector in zip(rows, vectors, strict=True):
        digest.update(json.dumps(row.model_dump(mode="json"), sort_keys=True).encode())
        digest.update(np.asarray(vector, dtype=np.float32).tobytes())
    return digest.hexdigest()


def copy_store(source: str | Path, destination: str | Path, *, namespace: str | None = None,
               progress: bool = False) -> CopyReport:
    """Copy one namespace (or every one) of ``source`` into ``destination``, then verify count and checksum."""
    if namespace is not None:
        check_namespace(namespace)
    src = open_backend(source)
    try:
        dst = open_backend(destination)
        try:
            return _copy(src, dst, namespace, progress)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: EditBackend, dst: EditBackend, namespace: str | None, progress: bool) -> CopyReport:
    if src.location == dst.location:
        raise EditError("destination: it is the source store; name another store")
    dim, embedder = src.meta("embedding_dim"), src.meta("embedder")
    if dim is None or embedder is None:
        raise EditError(f"source: {src.location} holds no edits yet (it was never opened with an embedder)")
    found_dim, found_embedder = dst.set_meta_once("embedding_dim", dim), dst.set_meta_once("embedder", embedder)
    if (found_dim, found_embedder) != (dim, embedder):
        raise EditError(f"destination: it holds {found_dim}-dimensional embeddings from {found_embedder!r}, the "
                        f"source {dim}-dimensional ones from {embedder!r}; copy into a new store")
    src.open_edits(int(dim), "auto")
    dst.open_edits(int(dim), "auto")
    namespaces = [namespace] if namespace is not None else src.namespaces()
    if namespace is not None and namespace not in src.namespaces():
        raise EditError(f"namespace: {src.location} has no namespace {namespace!r}")
    busy = [name for name in namespaces if dst.count(name, include_history=True)]
    if busy:
        raise EditError(f"destination: namespace {busy[0]!r} already holds edits there; copy into an empty "
                        "namespace or a new store (nothing was copied)")
    copied = []
    for name in tqdm(namespaces, desc="copying namespaces", disable=not progress):
        rows, vectors = src.dump(name)
        dst.restore(rows, vectors)
        back_rows, back_vectors = dst.dump(name)
        sums = checksum(rows, vectors), checksum(back_rows, back_vectors)
        if len(back_rows) != len(rows) or sums[0] != sums[1]:
            raise EditError(f"destination: namespace {name!r} reads back {len(back_rows)} edits (checksum "
                            f"{sums[1][:12]}) where {len(rows)} were copied (checksum {sums[0][:12]})")
        copied.append(CopiedNamespace(namespace=name, edits=len(rows), checksum=sums[0],
                                      live=sum(row.status == "live" for row in rows)))
        logger.info("copied %s: %d edits, sha256 %s", name, len(rows), sums[0][:12])
    keys = 0
    if namespace is None:
        key_rows = src.keys.key_rows()
        dst.keys.restore_keys(key_rows)
        keys = len(key_rows)
    return CopyReport(source=src.location, destination=dst.location, namespaces=copied, keys=keys)
