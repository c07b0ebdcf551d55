"""Namespace isolation as a property: whatever the namespaces, edits and queries, no API crosses over.

Hypothesis draws valid namespace names (including ones differing only in case, which name
different index files), edits that share subjects and relations across namespaces (so the same
supersession key exists in several), deletions, and free-text queries. Each example runs on a
fresh real store (embedded, then PostgreSQL) with the real packaged embedder, and checks every read API against a plain
model of what each namespace should hold: not only that nothing foreign comes back, but that
what should come back does (an empty answer would pass a "nothing foreign" check trivially).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _postgres import new_database
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from editagent.agent import EditAgent
from editagent.graph import EditGraph
from editagent.memory import EditMemory
from editagent.relations import fact_question
from editagent.schema import NAMESPACE_PATTERN, Edit, EditError, check_namespace

SUBJECTS = ["Doug TenNapel", "France", "Ellie Goulding", "Lionel Messi", "The Hobbit", "doug tennapel"]
RELATIONS = ["country of citizenship", "capital", "employer", "P27"]  # P27 is the same relation as the first
OBJECTS = ["United Kingdom", "Lyon", "NASA", "cricket", "Stephen King", "Japan", "Chile", "BBC"]
QUESTIONS = ["What is the country of citizenship of Doug TenNapel?", "What is the capital of France?",
             "Who is the employer of Ellie Goulding?", "Which sport does Lionel Messi play?"]
MAX_EDITS = 12

namespaces_strategy = st.one_of(
    st.sampled_from(["default", "alice", "Alice", "ALICE", "bob", "a.b", "a_b", "0", "x-1"]),
    st.from_regex(NAMESPACE_PATTERN, fullmatch=True),
)
query_strategy = st.one_of(
    st.sampled_from(QUESTIONS + SUBJECTS),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip),
)


@dataclass(frozen=True)
class Scenario:
    namespaces: list[str]
    edits: list[tuple[int, int, int, int]]  # (namespace, subject, relation, object) positions
    through_agent: int  # edits from this position on go through EditAgent.edit_many, the rest through add
    deletions: list[int]  # edit positions an agent of the edit's namespace forgets
    queries: list[str]
    limit: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    names = draw(st.lists(namespaces_strategy, min_size=2, max_size=4, unique=True))
    edit = st.tuples(st.integers(0, len(names) - 1), st.integers(0, len(SUBJECTS) - 1),
                     st.integers(0, len(RELATIONS) - 1), st.integers(0, len(OBJECTS) - 1))
    edits = draw(st.lists(edit, min_size=1, max_size=MAX_EDITS))
    return Scenario(names, edits, draw(st.integers(0, len(edits))),
                    draw(st.lists(st.integers(0, len(edits) - 1), max_size=3)),
                    draw(st.lists(query_strategy, min_size=1, max_size=3)), draw(st.integers(1, 15)))


class Model:
    """What each namespace should hold, kept by hand from the same operations."""

    def __init__(self, namespaces: Sequence[str]) -> None:
        self.all: dict[str, list[str]] = {ns: [] for ns in namespaces}
        self.live: dict[str, dict[tuple[str, str, str], str]] = {ns: {} for ns in namespaces}
        self.namespace_of: dict[str, str] = {}

    def add(self, edits: Sequence[Edit]) -> None:
        for edit in edits:
            self.all[edit.namespace].append(edit.id)
            self.live[edit.namespace][edit.key] = edit.id  # supersedes the live edit on the key, if any
            self.namespace_of[edit.id] = edit.namespace

    def delete(self, edit_id: str) -> bool:
        live = self.live[self.namespace_of[edit_id]]
        key = next((key for key, value in live.items() if value == edit_id), None)
        if key is None:
            return False
        del live[key]
        return True

    def live_ids(self, namespace: str) -> set[str]:
        return set(self.live[namespace].values())


def build(memory: EditMemory, scenario: Scenario) -> Model:
    model = Model(scenario.namespaces)
    edits = [Edit(subject=SUBJECTS[s], relation=RELATIONS[r], object=OBJECTS[o], namespace=scenario.namespaces[n])
             for n, s, r, o in scenario.edits]
    direct, via_agent = edits[:scenario.through_agent], edits[scenario.through_agent:]
    if direct:
        model.add(memory.add(direct))  # one batch, several namespaces
    for namespace in scenario.namespaces:
        mine = [edit for edit in via_agent if edit.namespace == namespace]
        if mine:
            model.add(EditAgent(namespace=namespace, memory=memory).edit_many(mine))
    for position in scenario.deletions:
        edit = edits[position]
        agent = EditAgent(namespace=edit.namespace, memory=memory)
        if model.delete(edit.id):
            assert agent.forget(edit.id).status == "deleted"
        else:
            with pytest.raises(EditError):
                agent.forget(edit.id)  # already superseded or deleted
    return model


def check_namespace_view(memory: EditMemory, model: Model, scenario: Scenario, namespace: str) -> None:
    """Every read API for one namespace: its own edits, all that should be there, nothing else."""
    live, every = model.live_ids(namespace), set(model.all[namespace])
    foreign = set(model.namespace_of) - every

    for include_history, pool in ((False, live), (True, every)):
        rows = memory.search_many(scenario.queries, namespace=namespace, limit=scenario.limit,
                                  include_history=include_history)
        for hits in rows:
            assert {hit.edit.namespace for hit in hits} <= {namespace}
            assert {hit.id for hit in hits} <= pool
            assert len(hits) == min(scenario.limit, len(pool))
    single = memory.search(scenario.queries[-1], namespace=namespace, limit=scenario.limit,
                           include_history=True)
    assert [hit.id for hit in single] == [hit.id for hit in rows[-1]]

    for subject in SUBJECTS:
        for relation in RELATIONS:
            found = memory.lookup(subject, relation, namespace=namespace)
            key = Edit(subject=subject, relation=relation, object="?", namespace=namespace).key
            assert (found.id if found else None) == model.live[namespace].get(key)

    assert [stored.id for stored in memory.edits(namespace)] == [i for i in model.all[namespace] if i in live]
    assert [stored.id for stored in memory.edits(namespace, include_history=True)] == model.all[namespace]
    assert memory.count(namespace) == len(live)
    for edit_id in every:
        assert {stored.namespace for stored in memory.history(edit_id)} == {namespace}

    records = memory.export(namespace)
    assert [record["id"] for record in records] == model.all[namespace]
    assert {record["namespace"] for record in records} <= {namespace}
    assert {record["id"] for record in records if record["status"] == "live"} == live
    assert [record["id"] for record in memory.export(namespace, include_history=False)] == \
        [i for i in model.all[namespace] if i in live]

    graph_edges(EditGraph(memory.edits(namespace, include_history=True)), namespace, every)

    agent = EditAgent(namespace=namespace, memory=memory)  # no language model is loaded for these
    assert {hit.id for hit in agent.search(scenario.queries[0], limit=scenario.limit)} <= live
    assert {stored.id for stored in agent.edits()} == live
    assert {stored.id for stored in agent.edits(include_history=True)} == every
    graph_edges(agent.graph(), namespace, every)
    for edit_id in every:
        got = agent.get(edit_id)
        assert got is not None and got.namespace == namespace
        assert {stored.id for stored in agent.history(edit_id)} <= every
    for edit_id in foreign:
        assert agent.get(edit_id) is None
        with pytest.raises(EditError, match="no edit"):
            agent.history(edit_id)
        status = memory.get(edit_id).status  # type: ignore[union-attr]
        with pytest.raises(EditError, match="no edit"):
            agent.forget(edit_id)
        assert memory.get(edit_id).status == status  # type: ignore[union-attr]  # forget did nothing


def check_ask(memory: EditMemory, model: Model, namespace: str) -> None:
    """EditAgent.ask (default method) answers each live key's question from this namespace's own edit.

    The chain walk reads ``EditMemory.edits(namespace)`` and loads the language model only for a hop
    no edit covers; every question here is covered, so no model loads (checked), and another
    namespace's edit on the same key (same question, other object) must never be the one used.
    """
    agent = EditAgent(namespace=namespace, memory=memory)
    live = model.live[namespace]
    if not live:
        return
    stored = {edit_id: memory.get(edit_id) for edit_id in live.values()}
    questions = [fact_question(item.subject, item.relation) for item in stored.values()]  # type: ignore[union-attr]
    for answer, (edit_id, item) in zip(agent.ask_many(questions), stored.items(), strict=True):
        assert answer.namespace == namespace
        assert [hop.retrieved_edit_id for hop in answer.trace] == [edit_id]
        assert answer.text == item.object  # type: ignore[union-attr]
    assert agent._llm is None, "a question answered from edits must not load the language model"


def graph_edges(graph: EditGraph, namespace: str, every: set[str]) -> None:
    edges = list(graph.nx.edges(data=True))
    assert {data["namespace"] for _, _, data in edges} <= {namespace}
    assert {data["edit_id"] for _, _, data in edges} <= every
    assert all(data["namespaces"] == [namespace] for _, data in graph.nx.nodes(data=True))


EXPLICIT = Scenario(  # always run: names equal but for case, one key in three namespaces, a deletion
    namespaces=["alice", "Alice", "alice.x"],
    edits=[(0, 0, 0, 0), (1, 0, 3, 5), (2, 5, 0, 6), (0, 0, 3, 7), (1, 1, 1, 1), (2, 2, 2, 2)],
    through_agent=3, deletions=[4], queries=[QUESTIONS[0], "Alice"], limit=3,
)


@pytest.fixture(params=["embedded", "postgres"])
def new_store(request: pytest.FixtureRequest) -> Callable[[str], str | Path]:
    """Makes a fresh store per example (hypothesis runs many in one test): a folder, or a new database."""
    if request.param == "embedded":
        return lambda folder: Path(folder) / "store"
    server = request.getfixturevalue("postgres_server")
    return lambda _: new_database(server)


# new_store is a factory: each example makes its own store with it, so nothing is shared between examples
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
@example(scenario=EXPLICIT)
def test_no_api_ever_returns_another_namespaces_edit(embedder: Any, new_store: Callable[[str], str | Path],
                                                      scenario: Scenario) -> None:
    for namespace in scenario.namespaces:
        check_namespace(namespace)
    with tempfile.TemporaryDirectory() as folder:
        store = new_store(folder)
        with EditMemory(store, embedder=embedder) as memory:
            model = build(memory, scenario)
            for namespace in scenario.namespaces:
                check_namespace_view(memory, model, scenario, namespace)

            for namespace in scenario.namespaces:
                check_ask(memory, model, namespace)
            # ask with method="mello" or "pokemqa" retrieves every hop through EditMemory.top1 with the
            # agent's namespace; checking top1 itself covers them without loading a language model.
            pairs = [(query, namespace) for query in scenario.queries for namespace in scenario.namespaces]
            hits = memory.top1([q for q, _ in pairs], [ns for _, ns in pairs])
            for (_, namespace), hit in zip(pairs, hits, strict=True):
                live = model.live_ids(namespace)
                assert (hit is None) == (not live)
                assert hit is None or (hit.edit.namespace == namespace and hit.id in live)

        # reopened: each namespace's index holds its own live edits and nothing else
        with EditMemory(store, embedder=embedder) as reopened:
            for namespace in scenario.namespaces:
                served = reopened.search(scenario.queries[0], namespace=namespace, limit=MAX_EDITS + 1)
                assert {hit.id for hit in served} == model.live_ids(namespace)
