"""EditMemory with the real packaged embedder and real SQLite and FAISS files.

Covers adding (single, batch, atomic), search, supersession, deletion, namespaces,
durability (reopen, lost / corrupt / stale index files) and argument validation. The behaviour tests run on both
backends: the embedded store and PostgreSQL with pgvector (a real server, from pgserver).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from editagent.memory import EditMemory
from editagent.relations import fact_question
from editagent.schema import Edit, EditError, SearchHit

LOGGER = "editagent.memory.edit_memory"


def facts(namespace: str = "default") -> list[Edit]:
    """Five unrelated counterfactual edits, fresh ids each call."""
    return [
        Edit(subject="Doug TenNapel", relation="P27", object="United Kingdom", namespace=namespace),
        Edit(subject="France", relation="capital", object="Lyon", namespace=namespace),
        Edit(subject="Ellie Goulding", relation="employer", object="NASA", namespace=namespace),
        Edit(subject="Lionel Messi", relation="sport", object="cricket", namespace=namespace),
        Edit(subject="The Hobbit", relation="author", object="Stephen King", namespace=namespace),
    ]


def question(edit: Edit) -> str:
    return fact_question(edit.subject, edit.relation)


QUERIES = [
    "What is the country of citizenship of Doug TenNapel?",
    "What is the capital of France?",
    "Who is the employer of Ellie Goulding?",
    "Which sport is Lionel Messi associated with?",
    "Who wrote The Hobbit?",
    "Which city is the headquarters of NASA?",
]


def snapshot(memory: EditMemory, queries: Sequence[str] = QUERIES, namespace: str = "default",
             limit: int = 10) -> list[list[tuple[str, float]]]:
    return [[(hit.id, hit.score) for hit in memory.search(q, namespace=namespace, limit=limit)] for q in queries]


def assert_same_results(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]],
                        tolerance: float = 1e-6) -> None:
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    for got_row, want_row in zip(got, want, strict=True):
        assert [s for _, s in got_row] == pytest.approx([s for _, s in want_row], abs=tolerance)
    assert any(want), "the comparison must cover some results"


def index_file(store: Path, namespace: str = "default") -> Path:
    return store / "index" / f"{namespace}.faiss"


@pytest.fixture
def memory(store: Any, embedder: Any) -> Iterator[EditMemory]:
    """A fresh memory on each backend (embedded, PostgreSQL)."""
    with EditMemory(store, embedder=embedder) as opened:
        yield opened


@pytest.fixture
def embedded_memory(store_path: Path, embedder: Any) -> Iterator[EditMemory]:
    """For what only the embedded store has: its SQLite file and FAISS index files."""
    with EditMemory(store_path, embedder=embedder) as opened:
        yield opened


# -- adding and searching ---------------------------------------------------------------------------


def test_add_single_edit_and_find_it(memory: EditMemory) -> None:
    edit = Edit(subject="Doug TenNapel", relation="P27", object="United Kingdom")
    stored = memory.add(edit)
    assert [row.fact() for row in stored] == [edit] and stored[0].status == "live"
    assert memory.count() == 1
    stored = memory.get(edit.id)
    assert stored is not None and stored.status == "live" and stored.fact() == edit
    hits = memory.search("Which country is Doug TenNapel a citizen of?")
    assert len(hits) == 1
    hit = hits[0]
    assert isinstance(hit, SearchHit)
    assert (hit.id, hit.memory, hit.status) == (edit.id, "Doug TenNapel is a citizen of United Kingdom.", "live")
    assert hit.edit.fact() == edit
    assert 0 < hit.score <= 1


def test_add_batch_and_each_question_finds_its_edit_first(memory: EditMemory) -> None:
    batch = facts()
    assert [row.fact() for row in memory.add(iter(batch))] == batch  # any iterable is a batch
    assert memory.count() == len(batch)
    assert [s.id for s in memory.edits()] == [e.id for e in batch]  # creation order
    for edit in batch:
        hits = memory.search(question(edit), limit=3)
        assert len(hits) == 3
        assert hits[0].id == edit.id, (question(edit), [h.memory for h in hits])
        assert 0 < hits[0].score <= 1
        assert all(-1 <= h.score <= 1 for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].score > hits[1].score
    assert len(memory.search("anything at all", limit=1000)) == len(batch)
    assert memory.add([]) == []
    assert memory.count() == len(batch)


def test_query_equal_to_the_sentence_scores_at_most_one(memory: EditMemory) -> None:
    batch = facts()
    memory.add(batch)
    for edit in batch:
        top = memory.search(edit.sentence, limit=1)[0]
        assert top.id == edit.id
        assert top.score == pytest.approx(1.0, abs=1e-5)
        assert top.score <= 1.0


def test_search_of_an_empty_store_or_namespace_is_empty(memory: EditMemory) -> None:
    assert memory.search("Who is the employer of Ellie Goulding?") == []
    assert memory.search("Who is the employer of Ellie Goulding?", include_history=True) == []
    memory.add(facts("alice"))
    assert memory.search("Who is the employer of Ellie Goulding?", namespace="default", limit=1000) == []
    assert memory.count() == 0 and memory.count("alice") == 5


# -- supersession -------------------------------------------------------------------------------------


def test_newer_edit_on_the_same_key_supersedes(memory: EditMemory) -> None:
    first = Edit(subject="Doug TenNapel", relation="P27", object="United Kingdom")
    memory.add([first, *facts()[1:]])
    second = Edit(subject="doug TENNAPEL", relation="Citizenship", object="Canada")
    memory.add(second)

    old, new = memory.get(first.id), memory.get(second.id)
    assert old is not None and new is not None
    assert (old.status, old.superseded_by) == ("superseded", second.id)
    assert old.ended_at is not None
    assert (new.status, new.superseded_by, new.ended_at) == ("live", None, None)
    assert memory.count() == 5 and memory.count(include_history=True) == 6

    query = "What is the country of citizenship of Doug TenNapel?"
    live = memory.search(query, limit=1000)
    assert live[0].id == second.id
    assert first.id not in {h.id for h in live}
    assert all(h.status == "live" for h in live)

    everything = memory.search(query, limit=1000, include_history=True)
    statuses = {h.id: h.status for h in everything}
    assert len(everything) == 6
    assert statuses[first.id] == "superseded" and statuses[second.id] == "live"
    assert {h.id for h in everything[:2]} == {first.id, second.id}

    for member in (first.id, second.id):
        history = memory.history(member)
        assert [s.id for s in history] == [first.id, second.id]
        assert [s.status for s in history] == ["superseded", "live"]

    found = memory.lookup("DOUG TenNapel", "country of citizenship")
    assert found is not None and found.id == second.id and found.object == "Canada"
    assert memory.lookup("Doug TenNapel", "P19") is None
    assert memory.lookup("Doug TenNapel", "P27", namespace="alice") is None


def test_batch_with_two_edits_on_one_key_keeps_the_later(memory: EditMemory) -> None:
    earlier = Edit(subject="Ellie Goulding", relation="employer", object="NASA")
    later = Edit(subject="ellie goulding", relation="employed by", object="BBC")
    memory.add([earlier, later])
    assert memory.count() == 1
    found = memory.lookup("Ellie Goulding", "employer")
    assert found is not None and found.id == later.id
    stored = memory.get(earlier.id)
    assert stored is not None and (stored.status, stored.superseded_by) == ("superseded", later.id)
    assert [h.id for h in memory.search("Who is the employer of Ellie Goulding?", limit=10)] == [later.id]
    assert [s.id for s in memory.history(earlier.id)] == [earlier.id, later.id]


def test_same_key_in_two_namespaces_does_not_supersede(memory: EditMemory) -> None:
    mine = Edit(subject="Doug TenNapel", relation="P27", object="Canada", namespace="alice")
    theirs = Edit(subject="Doug TenNapel", relation="P27", object="Japan", namespace="bob")
    memory.add([mine, theirs])
    for edit in (mine, theirs):
        stored = memory.get(edit.id)
        assert stored is not None and stored.status == "live"
        found = memory.lookup("doug tennapel", "P27", namespace=edit.namespace)
        assert found is not None and found.id == edit.id


def test_two_names_of_one_entity_are_one_key(memory: EditMemory) -> None:
    """The store supersedes by the name key the reasoner matches entities by: "The Beatles" is "Beatles"."""
    first = Edit(subject="The Beatles", relation="genre", object="rock")
    memory.add(first)
    second = Edit(subject="Beatles", relation="genre", object="pop")
    memory.add(second)
    old = memory.get(first.id)
    assert old is not None and (old.status, old.superseded_by) == ("superseded", second.id)
    assert memory.count() == 1
    for name in ("the beatles", "Beatles.", "THE  BEATLES"):
        found = memory.lookup(name, "genre")
        assert found is not None and found.id == second.id
    assert [s.id for s in memory.history(first.id)] == [first.id, second.id]
    initials = Edit(subject="J.K. Rowling", relation="P27", object="France")
    memory.add([initials, Edit(subject="J. K. Rowling", relation="P27", object="Spain")])
    assert [e.object for e in memory.edits() if e.relation == "country of citizenship"] == ["Spain"]
    other = Edit(subject="The", relation="genre", object="jazz")  # nothing but "the": its own key, not every name's
    memory.add(other)
    assert memory.count() == 3


def _as_keyed_by_case(store: Any) -> None:
    """Put ``store`` back as the schema before name keys left two names of one entity: both live, keyed by case."""
    if isinstance(store, Path):
        with sqlite3.connect(store / "edits.sqlite3") as db:
            db.execute("UPDATE edits SET status = 'live', superseded_by = NULL, ended_at = NULL, "
                       "subject_key = lower(subject)")
            db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
            assert db.execute("SELECT count(*) FROM edits WHERE status = 'live'").fetchone() == (2,)
        return
    import psycopg

    with psycopg.connect(store, autocommit=True) as connection:
        connection.execute("UPDATE editagent_edits SET status = 'live', superseded_by = NULL, ended_at = NULL, "
                           "subject_key = lower(subject)")
        connection.execute("UPDATE editagent_schema_version SET version = 1")


def test_a_store_keyed_by_case_is_rekeyed_on_open(store: Any, embedder: Any) -> None:
    older = Edit(subject="The Beatles", relation="genre", object="rock")
    newer = Edit(subject="Beatles", relation="genre", object="pop")
    with EditMemory(store, embedder=embedder) as memory:
        memory.add(older)
        memory.add(newer)
    _as_keyed_by_case(store)
    with EditMemory(store, embedder=embedder) as memory:
        assert [e.id for e in memory.edits()] == [newer.id]
        stored = memory.get(older.id)
        assert stored is not None and (stored.status, stored.superseded_by) == ("superseded", newer.id)
        assert [h.id for h in memory.search("What type of music does the Beatles play?", limit=5)] == [newer.id]
        found = memory.lookup("the beatles", "genre")
        assert found is not None and found.id == newer.id


# -- deletion -------------------------------------------------------------------------------------------


def test_delete(memory: EditMemory, store: Any, embedder: Any) -> None:
    batch = facts()
    memory.add(batch)
    gone = batch[2]
    result = memory.delete(gone.id)
    assert result.status == "deleted" and result.id == gone.id and result.ended_at is not None

    assert gone.id not in {h.id for h in memory.search(question(gone), limit=1000)}
    assert memory.search(question(gone), limit=1)[0].id != gone.id
    stored = memory.get(gone.id)
    assert stored is not None and stored.status == "deleted"
    assert [(s.id, s.status) for s in memory.history(gone.id)] == [(gone.id, "deleted")]
    with_history = {h.id: h.status for h in memory.search(question(gone), limit=1000, include_history=True)}
    assert with_history[gone.id] == "deleted"
    assert memory.count() == 4 and memory.count(include_history=True) == 5
    assert gone.id not in {s.id for s in memory.edits()}
    assert memory.lookup(gone.subject, gone.relation) is None

    with pytest.raises(EditError, match="it is deleted"):
        memory.delete(gone.id)
    with pytest.raises(EditError, match="no edit has this id"):
        memory.delete("no-such-edit")
    with pytest.raises(EditError, match="id"):
        memory.history("no-such-edit")

    replaced = batch[0]
    memory.add(Edit(subject=replaced.subject, relation=replaced.relation, object="Canada"))
    with pytest.raises(EditError, match="it is superseded"):
        memory.delete(replaced.id)

    # a new edit on the deleted key is live, and history shows both
    again = Edit(subject=gone.subject, relation=gone.relation, object="BBC")
    memory.add(again)
    assert [(s.id, s.status) for s in memory.history(gone.id)] == [(gone.id, "deleted"), (again.id, "live")]

    memory.close()
    with EditMemory(store, embedder=embedder) as reopened:  # the deletion is durable
        assert gone.id not in {h.id for h in reopened.search(question(gone), limit=1000)}
        assert reopened.search(question(gone), limit=1)[0].id == again.id


# -- namespaces -----------------------------------------------------------------------------------------


def test_namespaces_are_isolated(memory: EditMemory) -> None:
    alice = facts("alice")
    bob = [Edit(subject="Mount Fuji", relation="country", object="Chile", namespace="bob"),
           Edit(subject="The Beatles", relation="genre", object="jazz", namespace="bob")]
    memory.add(alice)
    memory.add(bob)
    alice_ids = {e.id for e in alice}
    bob_ids = {e.id for e in bob}

    for query in [question(e) for e in alice] + [e.sentence for e in alice]:
        for history in (False, True):
            hits = memory.search(query, namespace="bob", limit=1000, include_history=history)
            assert {h.id for h in hits} == bob_ids
            assert all(h.edit.namespace == "bob" for h in hits)
    assert {h.id for h in memory.search("Which country is Mount Fuji in?", namespace="alice", limit=1000)} == alice_ids
    assert memory.search(question(alice[0]), namespace="alice", limit=1)[0].id == alice[0].id

    assert {s.id for s in memory.edits("bob")} == bob_ids
    assert {s.id for s in memory.edits("alice")} == alice_ids
    assert {s.id for s in memory.edits(None)} == alice_ids | bob_ids
    assert memory.edits("default") == []
    assert memory.namespaces() == ["alice", "bob"]
    assert (memory.count("alice"), memory.count("bob"), memory.count(None)) == (5, 2, 7)
    assert memory.lookup(alice[0].subject, alice[0].relation, namespace="bob") is None
    assert all({h.id for h in row} == bob_ids
               for row in memory.search_many([question(e) for e in alice], namespace="bob", limit=1000))
    with pytest.raises(EditError, match="namespace"):
        memory.edits("a b")


# -- durability -----------------------------------------------------------------------------------------


def test_reopen_gives_identical_results(memory: EditMemory, store: Any, embedder: Any) -> None:
    memory.add(facts())
    memory.add(Edit(subject="Doug TenNapel", relation="P27", object="Canada"))  # one superseded edit too
    before = snapshot(memory)
    before_history = [[(h.id, h.status) for h in memory.search(q, limit=10, include_history=True)] for q in QUERIES]
    memory.close()
    with EditMemory(store, embedder=embedder) as reopened:
        assert_same_results(snapshot(reopened), before)
        assert [[(h.id, h.status) for h in reopened.search(q, limit=10, include_history=True)]
                for q in QUERIES] == before_history
        assert reopened.count() == 5 and reopened.count(include_history=True) == 6


def test_sqlite_file_is_in_wal_mode(embedded_memory: EditMemory, store_path: Path) -> None:
    memory = embedded_memory
    memory.add(facts()[:1])
    connection = sqlite3.connect(store_path / "edits.sqlite3")
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT count(*) FROM edits").fetchone()[0] == 1
    finally:
        connection.close()


def test_lost_index_file_is_rebuilt_with_a_warning(embedded_memory: EditMemory, store_path: Path, embedder: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    memory = embedded_memory
    memory.add(facts())
    before = snapshot(memory)
    memory.close()
    path = index_file(store_path)
    assert path.is_file()
    path.unlink()
    with caplog.at_level(logging.WARNING, logger=LOGGER), EditMemory(store_path, embedder=embedder) as reopened:
        assert_same_results(snapshot(reopened), before)
    assert any("missing" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_corrupt_index_file_is_rebuilt_with_a_warning(embedded_memory: EditMemory, store_path: Path, embedder: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    memory = embedded_memory
    memory.add(facts())
    before = snapshot(memory)
    memory.close()
    path = index_file(store_path)
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with caplog.at_level(logging.WARNING, logger=LOGGER), EditMemory(store_path, embedder=embedder) as reopened:
        assert_same_results(snapshot(reopened), before)
        reopened.add(Edit(subject="Mount Fuji", relation="country", object="Chile"))  # a write saves a good file
    assert any("unreadable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER), EditMemory(store_path, embedder=embedder) as again:
        assert again.search("Which country is Mount Fuji located in?", limit=1)[0].edit.object == "Chile"
    assert not caplog.records


def test_stale_index_file_is_patched_on_open(embedded_memory: EditMemory, store_path: Path, embedder: Any,
                                             tmp_path: Path) -> None:
    memory = embedded_memory
    batch = facts()
    memory.add(batch[:3])
    path = index_file(store_path)
    old_copy = tmp_path / "old.faiss"
    shutil.copyfile(path, old_copy)
    memory.add(batch[3:])
    memory.delete(batch[0].id)  # the old file still holds this one
    newer = Edit(subject="Ellie Goulding", relation="employer", object="BBC")  # supersedes one the old file holds
    memory.add(newer)
    expected = snapshot(memory)
    memory.close()
    shutil.copyfile(old_copy, path)

    with EditMemory(store_path, embedder=embedder) as reopened:
        for edit in batch[3:]:
            assert reopened.search(question(edit), limit=1)[0].id == edit.id
        assert reopened.search("Who is the employer of Ellie Goulding?", limit=1)[0].id == newer.id
        ids = {h.id for h in reopened.search("Doug TenNapel", limit=1000)}
        assert batch[0].id not in ids and batch[2].id not in ids
        assert len(ids) == 4
        assert_same_results(snapshot(reopened), expected)


def test_rebuild_index_keeps_results(embedded_memory: EditMemory, store_path: Path) -> None:
    memory = embedded_memory
    memory.add(facts())
    before = snapshot(memory)
    index_file(store_path).unlink()
    memory.rebuild_index("default")
    assert index_file(store_path).is_file()
    assert_same_results(snapshot(memory), before)
    with pytest.raises(EditError, match="namespace"):
        memory.rebuild_index("../escape")
    assert not (store_path / "escape.faiss").exists()


def test_two_open_memories_see_each_others_writes(memory: EditMemory, store: Any, embedder: Any) -> None:
    batch = facts()
    memory.add(batch[:2])
    with EditMemory(store, embedder=embedder) as other:
        assert other.search(question(batch[1]), limit=1)[0].id == batch[1].id
        other.add(batch[2:])
        assert memory.search(question(batch[4]), limit=1)[0].id == batch[4].id
        other.delete(batch[4].id)
        assert batch[4].id not in {h.id for h in memory.search(question(batch[4]), limit=1000)}
        assert_same_results(snapshot(memory), snapshot(other))


# -- atomic batches -------------------------------------------------------------------------------------


def _bad_batches(stored: list[Edit]) -> dict[str, list[Any]]:
    # each batch starts with an edit that would supersede a stored one, so a half-written batch would show
    def superseding() -> Edit:
        return Edit(subject=stored[0].subject, relation=stored[0].relation, object="Japan")

    fresh = Edit(subject="Mount Fuji", relation="country", object="Chile")
    return {
        "id already stored": [superseding(), Edit(subject="Mount Fuji", relation="country", object="Chile",
                                                  id=stored[1].id)],
        "id twice in the batch": [superseding(), fresh, Edit(subject="The Beatles", relation="genre",
                                                             object="jazz", id=fresh.id)],
        "not an Edit": [superseding(), fresh, {"subject": "The Beatles", "relation": "genre", "object": "jazz"}],
    }


@pytest.mark.parametrize("case", ["id already stored", "id twice in the batch", "not an Edit"])
def test_a_bad_batch_writes_nothing(memory: EditMemory, store: Any, case: str) -> None:
    stored = facts()
    memory.add(stored)
    before = snapshot(memory)
    total = memory.count(None, include_history=True)
    embedded = isinstance(store, Path)
    file_before = index_file(store).read_bytes() if embedded else b""

    with pytest.raises(EditError, match=r"id|edits\[2\]"):
        memory.add(_bad_batches(stored)[case])

    assert memory.count(None, include_history=True) == total
    assert memory.count() == len(stored)
    assert_same_results(snapshot(memory), before)
    first = memory.get(stored[0].id)
    assert first is not None and first.status == "live"
    assert memory.lookup("Mount Fuji", "country") is None
    if embedded:
        assert index_file(store).read_bytes() == file_before
    # the store is still usable
    memory.add(Edit(subject="Mount Fuji", relation="country", object="Chile"))
    assert memory.count() == len(stored) + 1


# -- embedder checks --------------------------------------------------------------------------------------


class _FakeEmbedder:
    """Stands in for a different real embedding model (another name or dimension) in the mismatch test only."""

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.dim = dim

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        vectors = np.ones((len(texts), self.dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _open_handles(path: Path) -> int:
    """How many file descriptors of this process point at ``path`` (Linux; -1 elsewhere)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return -1
    count = 0
    for fd in fds.iterdir():
        try:
            count += Path(os.readlink(fd)) == path.resolve()
        except OSError:
            continue
    return count


def test_embedder_mismatch(memory: EditMemory, store: Any, embedder: Any,
                           caplog: pytest.LogCaptureFixture) -> None:
    batch = facts()
    memory.add(batch)
    memory.close()
    database = store / "edits.sqlite3" if isinstance(store, Path) else None
    open_before = _open_handles(database) if database else 0
    with pytest.raises(EditError, match=r"embedder: this store holds 384-dimensional embeddings") as refused:
        EditMemory(store, embedder=_FakeEmbedder("other-model", 8))
    if database:
        assert _open_handles(database) == open_before, "a refused open must close its SQLite connection"
    del refused
    # same dimension, other name: allowed, with a warning
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        EditMemory(store, embedder=_FakeEmbedder("other-model", embedder.dim)).close()
    assert any("other-model" in r.getMessage() for r in caplog.records)
    # the refused opens changed nothing
    with EditMemory(store, embedder=embedder) as reopened:
        assert reopened.count() == len(batch)
        assert reopened.search(question(batch[0]), limit=1)[0].id == batch[0].id


# -- argument validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "field"), [
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"limit": -1}, "limit"),
    ({"limit": "5"}, "limit"),
    ({"limit": True}, "limit"),
    ({"limit": 2.0}, "limit"),
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": "x" * 2001}, "query"),
    ({"query": 5}, "query"),
    ({"namespace": "a b"}, "namespace"),
    ({"namespace": "../x"}, "namespace"),
    ({"namespace": ""}, "namespace"),
])
def test_search_arguments_are_checked(memory: EditMemory, arguments: dict[str, Any], field: str) -> None:
    memory.add(facts()[:1])
    call = {"query": "Who is Doug TenNapel?", **arguments}
    with pytest.raises(EditError, match=rf"^{field}:"):
        memory.search(call.pop("query"), **call)
    with pytest.raises(EditError, match=rf"^{field}:"):
        memory.search_many(["Who is Doug TenNapel?", arguments.get("query", "fine")],
                           **{k: v for k, v in arguments.items() if k != "query"})


def test_limits_at_the_edges_are_accepted(memory: EditMemory) -> None:
    memory.add(facts())
    assert len(memory.search("Doug TenNapel", limit=1)) == 1
    assert len(memory.search("Doug TenNapel", limit=1000)) == 5
    assert len(memory.search("x" * 2000, limit=2)) == 2


def test_search_many_equals_single_searches(memory: EditMemory) -> None:
    memory.add(facts())
    memory.add(Edit(subject="France", relation="capital", object="Marseille"))
    assert memory.search_many([]) == []
    for history in (False, True):
        many = memory.search_many(QUERIES, limit=4, include_history=history)
        single = [memory.search(q, limit=4, include_history=history) for q in QUERIES]
        assert len(many) == len(QUERIES)
        # batched encoding pads the inputs, which moves scores by ~1e-7; ids and order must match exactly
        assert_same_results([[(h.id, h.score) for h in row] for row in many],
                            [[(h.id, h.score) for h in row] for row in single], tolerance=1e-5)
        assert [[(h.memory, h.status) for h in row] for row in many] == [
            [(h.memory, h.status) for h in row] for row in single]


# -- what only the PostgreSQL store has -------------------------------------------------------------------


def test_postgres_schema_is_versioned_and_a_newer_one_refused(postgres_url: str, embedder: Any) -> None:
    import psycopg

    with EditMemory(postgres_url, embedder=embedder) as memory:
        memory.add(facts()[:1])
        assert memory.location == postgres_url and memory.path.is_absolute()
        with pytest.raises(EditError, match="keeps its vector index in the database"):
            memory.rebuild_index("default")
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert connection.execute("SELECT version FROM editagent_schema_version").fetchall() == [(2,)]
        connection.execute("UPDATE editagent_schema_version SET version = 99")
    with pytest.raises(EditError, match="schema version 99 is newer"):
        EditMemory(postgres_url, embedder=embedder)


def test_postgres_url_password_never_shows(postgres_server: Any, embedder: Any) -> None:
    url = "postgresql://editor:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(EditError, match="cannot connect") as refused:
        EditMemory(url, embedder=embedder)
    assert "hunter2" not in str(refused.value) and "editor:***@" in str(refused.value)


@pytest.mark.parametrize(("index", "uses_hnsw"), [("hnsw", True), ("flat", False), ("auto", False)])
def test_postgres_search_uses_the_hnsw_index_only_when_it_should(postgres_url: str, embedder: Any, index: str,
                                                                 uses_hnsw: bool) -> None:
    """"auto" scans a namespace of up to EXACT_SCAN_ROWS edits exactly; the plan of the store's own query says
    whether pgvector's index serves it, and either way each fact is found."""
    from editagent.memory.postgres import _search_sql, _vector_literal

    with EditMemory(postgres_url, embedder=embedder, index=index) as memory:
        memory.add(facts())
        for edit in facts():
            assert memory.search(question(edit), limit=1)[0].edit.object == edit.object
        backend = memory.backend
        exact = backend._live_count("default") <= backend.exact_rows  # type: ignore[attr-defined]
        literal = _vector_literal(embedder.encode(["Who wrote The Hobbit?"])[0])
        plan = backend._query("EXPLAIN " + _search_sql(exact, False),  # type: ignore[attr-defined]
                              (literal, "default", literal, 1))
        assert ("editagent_edits_embedding" in " ".join(row[0] for row in plan)) == uses_hnsw
