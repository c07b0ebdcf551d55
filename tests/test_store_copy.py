"""`editagent store copy`: embedded -> PostgreSQL -> embedded, with history, ids, embeddings and keys intact."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from _servers import editagent

from editagent.keys import KeyRing
from editagent.memory import EditMemory
from editagent.memory.copy import copy_store
from editagent.schema import Edit, EditError

QUESTIONS = ["Which country is Doug TenNapel a citizen of?", "Who does Alice report to?",
             "What is the capital of France?"]


def fill(store: Path, embedder: Any) -> list[dict[str, Any]]:
    with EditMemory(store, embedder=embedder) as memory:
        memory.add([Edit(subject="Doug TenNapel", relation="country of citizenship", object="United Kingdom"),
                    Edit(subject="France", relation="capital", object="Lyon", metadata={"ticket": 7}),
                    Edit(subject="Alice", relation="manager", object="Bob", namespace="alice", aliases=["Al"])])
        memory.add(Edit(subject="Doug TenNapel", relation="country of citizenship", object="Canada"))  # supersedes
        memory.delete(memory.lookup("France", "capital").id)
        return [*memory.export("default"), *memory.export("alice")]


def searches(store: str | Path, embedder: Any) -> list[list[tuple[str, float]]]:
    with EditMemory(store, embedder=embedder) as memory:
        return [[(hit.id, round(hit.score, 5)) for hit in memory.search(q, namespace=ns, limit=5,
                                                                         include_history=history)]
                for q in QUESTIONS for ns in ("default", "alice") for history in (False, True)]


def test_a_store_goes_to_postgres_and_back_whole(store_path: Path, postgres_url: str, tmp_path: Path,
                                                 embedder: Any, caplog: pytest.LogCaptureFixture) -> None:
    records = fill(store_path, embedder)
    with KeyRing(store_path) as ring:
        key, secret = ring.create(["alice"], read_only=True)
    before = searches(store_path, embedder)

    copied = json.loads(editagent(["store", "copy", str(store_path), postgres_url, "--json"]).stdout)
    assert [(n["namespace"], n["edits"], n["live"]) for n in copied["namespaces"]] == [("alice", 1, 1),
                                                                                     ("default", 3, 1)]
    assert copied["keys"] == 1
    with caplog.at_level(logging.WARNING):
        back = copy_store(postgres_url, tmp_path / "back")
    assert not caplog.records, "a copy into a new folder writes its index files without a rebuild warning"
    assert [n.checksum for n in back.namespaces] == [n["checksum"] for n in copied["namespaces"]]

    for store in (postgres_url, tmp_path / "back"):
        with EditMemory(store, embedder=embedder) as memory:
            assert [*memory.export("default"), *memory.export("alice")] == records  # ids, statuses, times, all
        assert searches(store, embedder) == before
        with KeyRing(store) as ring:
            found = ring.authenticate(secret)
            assert found is not None and found.id == key.id and not found.allows("alice", write=True)


def test_one_namespace_only_and_never_into_a_namespace_with_edits(store_path: Path, postgres_url: str,
                                                                  embedder: Any) -> None:
    fill(store_path, embedder)
    report = copy_store(store_path, postgres_url, namespace="alice")
    assert [n.namespace for n in report.namespaces] == ["alice"] and report.keys == 0
    with EditMemory(postgres_url, embedder=embedder) as memory:
        assert memory.namespaces() == ["alice"]
        memory.add(Edit(subject="Paris", relation="country", object="Spain"))
        before = memory.export("default")
    with pytest.raises(EditError, match="destination: namespace 'alice' already holds edits"):
        copy_store(store_path, postgres_url)
    with EditMemory(postgres_url, embedder=embedder) as memory:  # the refused copy wrote nothing
        assert memory.export("default") == before and memory.count("alice", include_history=True) == 1
    with pytest.raises(EditError, match=r"namespace: .* has no namespace 'nobody'"):
        copy_store(store_path, postgres_url, namespace="nobody")
    refused = editagent(["store", "copy", str(store_path / "missing"), postgres_url], check=False)
    assert refused.returncode != 0 and "no edit store" in refused.stderr
