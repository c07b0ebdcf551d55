"""VectorIndex kinds: the approximate ones must agree with exact search on the queries the memory sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from editagent.memory.index import VectorIndex, resolve_kind


def _data(n: int, dim: int = 384, queries: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    stored = rng.standard_normal((n, dim)).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    source = rng.choice(n, queries, replace=False)
    noise = rng.standard_normal((queries, dim)).astype(np.float32)
    noise -= (noise * stored[source]).sum(1, keepdims=True) * stored[source]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return stored, 0.7 * stored[source] + np.sqrt(0.51) * noise, source  # queries at cosine 0.7 to their source


@pytest.mark.parametrize("kind", ["flat", "sketch"])
def test_top1_is_the_source_and_scores_are_cosines(kind: str) -> None:
    stored, queries, source = _data(20_000)
    index = VectorIndex(384, kind)
    index.add(np.arange(len(stored)) + 1, stored)
    scores, ids = index.search(queries, 3)
    assert np.array_equal(ids[:, 0], source + 1)
    assert np.allclose(scores[:, 0], 0.7, atol=1e-3)
    assert np.all(scores[:, 0] >= scores[:, 1])


@pytest.mark.parametrize("kind", ["sketch", "hnsw"])
def test_removed_ids_never_come_back_and_saving_needs_a_rebuild(kind: str, tmp_path: Path) -> None:
    stored, queries, source = _data(2_000, dim=64, queries=5)
    index = VectorIndex(64, kind)
    index.add(np.arange(len(stored)), stored)
    index.remove(source)
    _, ids = index.search(queries, 10)
    assert not set(ids.ravel()) & set(source.tolist())
    assert index.size == len(stored) - len(source) and index.tombstones == len(source)
    with pytest.raises(RuntimeError, match="rebuilt"):
        index.save(tmp_path / "x.faiss")


def test_sketch_index_survives_save_and_load(tmp_path: Path) -> None:
    stored, queries, source = _data(3_000, dim=64, queries=5)
    index = VectorIndex(64, "sketch")
    index.add(np.arange(len(stored)), stored)
    index.save(tmp_path / "x.faiss")
    loaded = VectorIndex.load(tmp_path / "x.faiss")
    assert loaded.kind == "sketch"
    assert np.array_equal(loaded.search(queries, 1)[1][:, 0], source)


def test_auto_picks_the_sketch_for_large_namespaces() -> None:
    assert resolve_kind("auto", 10) == "flat"
    assert resolve_kind("auto", 100_000) == "sketch"
    assert resolve_kind("hnsw", 10) == "hnsw"


def test_memory_on_a_sketch_index_searches_deletes_and_reopens(store_path: Path, embedder: object) -> None:
    from editagent.memory import EditMemory
    from editagent.schema import Edit

    memory = EditMemory(store_path, embedder=embedder, index="sketch")
    paris, rome = memory.add([Edit(subject="France", relation="capital", object="Lyon"),
                              Edit(subject="Italy", relation="capital", object="Milan")])
    assert memory.search("What is the capital of Italy?", limit=1)[0].id == rome.id
    memory.delete(rome.id)
    assert [hit.id for hit in memory.search("What is the capital of Italy?", limit=5)] == [paris.id]
    memory.close()
    reopened = EditMemory(store_path, embedder=embedder, index="sketch")
    assert [hit.id for hit in reopened.search("capital of France", limit=5)] == [paris.id]


def test_auto_index_moves_to_the_sketch_when_a_namespace_grows(store_path: Path, embedder: object,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from editagent.memory import EditMemory
    from editagent.memory import index as index_module
    from editagent.schema import Edit

    monkeypatch.setattr(index_module, "AUTO_SKETCH_THRESHOLD", 3)  # the real threshold is 100k edits
    memory = EditMemory(store_path, embedder=embedder)
    memory.add([Edit(subject=f"Person {i}", relation="P27", object="Norway") for i in range(2)])
    assert memory.backend._index("default").kind == "flat"
    memory.add([Edit(subject=f"Person {i}", relation="P27", object="Peru") for i in range(2, 4)])
    assert memory.backend._index("default").kind == "sketch"
    assert memory.search("Which country is Person 3 a citizen of?", limit=1)[0].edit.subject == "Person 3"


def test_unknown_index_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        VectorIndex(8, "ivf")  # type: ignore[arg-type]
