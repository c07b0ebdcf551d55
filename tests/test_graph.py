"""EditGraph on real MQuAKE cases: ripples, contradictions and the exports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from editagent.graph import ChainEdge, EditGraph
from editagent.names import name_key
from editagent.relations import canonical_relation
from editagent.schema import Edit, StoredEdit


@pytest.fixture(scope="module")
def cases(mquake_dir: Path) -> list[dict[str, Any]]:
    return json.loads((mquake_dir / "MQuAKE-CF-3k-dev600.json").read_text(encoding="utf-8"))


def _triple_key(subject: str, relation: str, obj: str) -> tuple[str, str, str]:
    return name_key(subject), canonical_relation(relation).casefold(), name_key(obj)


def case_edits(case: dict[str, Any], namespace: str = "default") -> tuple[list[Edit], list[Edit]]:
    """(edits, kb facts) of a case: the requested rewrites, and the true facts that they did not replace.

    KB facts are the new-world triples that are not edits, plus the old-world triples that no
    edit replaced (e.g. the old object's own facts), so the invalidated chain is present too.
    """
    cid = case["case_id"]
    edits = [
        Edit(subject=rw["subject"], relation=rw["relation_id"], object=rw["target_new"]["str"],
             previous_object=rw["target_true"]["str"], namespace=namespace, id=f"c{cid}e{i}")
        for i, rw in enumerate(case["requested_rewrite"])
    ]
    edited = {_triple_key(e.subject, e.relation, e.object) for e in edits}
    replaced = {_triple_key(e.subject, e.relation, e.previous_object or "") for e in edits}
    facts: list[Edit] = []
    seen: set[tuple[str, str, str]] = set()
    triples = case["orig"]["new_triples_labeled"] + case["orig"]["triples_labeled"]
    for s, r, o in triples:
        key = _triple_key(s, r, o)
        if key in edited or key in replaced or key in seen:
            continue
        seen.add(key)
        facts.append(Edit(subject=s, relation=r, object=o, namespace=namespace, source="kb",
                          id=f"c{cid}kb{len(facts)}"))
    return edits, facts


def _first_hop_case(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The first 2-hop case with exactly one edit, on its first hop."""
    for case in cases:
        triples = case["orig"]["new_triples_labeled"]
        rewrites = case["requested_rewrite"]
        if len(triples) == 2 and len(rewrites) == 1:
            s, r, o = triples[0]
            rw = rewrites[0]
            if _triple_key(s, r, o) == _triple_key(rw["subject"], rw["relation_id"], rw["target_new"]["str"]):
                return case
    raise AssertionError("no 2-hop case with a single first-hop edit in the data")


@pytest.fixture(scope="module")
def hop_case(cases: list[dict[str, Any]]) -> dict[str, Any]:
    return _first_hop_case(cases)


def test_ripple_reaches_new_answer(hop_case: dict[str, Any]) -> None:
    edits, facts = case_edits(hop_case)
    graph = EditGraph.from_edits(edits + facts)
    chains = graph.ripple(edits[0])
    forward = [c for c in chains if c.reason == "forward"]
    new_answer = hop_case["new_single_hops"][1]["answer"]
    assert any(name_key(c.end) == name_key(new_answer) and c.edges[0].edit_id == edits[0].id for c in forward)
    assert hop_case["new_answer"] == new_answer
    assert all(c.hops >= 2 for c in chains)


def test_ripple_marks_invalidated_old_chain(hop_case: dict[str, Any]) -> None:
    edits, facts = case_edits(hop_case)
    graph = EditGraph.from_edits(edits + facts)
    old = hop_case["orig"]["triples_labeled"]
    invalidated = [c for c in graph.ripple(edits[0]) if c.reason == "invalidated"]
    assert invalidated, "the old second hop should be reported as invalidated"
    chain = invalidated[0]
    assert name_key(chain.edges[0].object) == name_key(old[0][2])
    assert name_key(chain.end) == name_key(old[1][2])
    # the old answer differs from the new one, so the invalidated chain must not reach it
    assert name_key(chain.end) != name_key(hop_case["new_answer"])


def test_ripple_backward_and_through_on_synthetic_chain() -> None:
    edit = Edit(subject="Doug TenNapel", relation="citizenship", object="UK", previous_object="USA", id="e1")
    facts = [
        Edit(subject="Marge Simpson", relation="creator", object="Doug TenNapel", id="k1", source="kb"),
        Edit(subject="UK", relation="official language", object="English", id="k2", source="kb"),
        Edit(subject="USA", relation="capital", object="Washington", id="k3", source="kb"),
        Edit(subject="Springfield", relation="creator", object="Marge Simpson", id="k4", source="kb"),
        Edit(subject="UK", relation="head of state", object="Marge Simpson", id="k5", source="kb"),  # closes a cycle
    ]
    graph = EditGraph.from_edits([edit, *facts])
    chains = graph.ripple(edit, max_hops=3)
    by_reason = {reason: [[tuple(e) for e in c.edges] for c in chains if c.reason == reason]
                 for reason in ("forward", "backward", "through", "invalidated")}
    assert by_reason["forward"] == [[("Doug TenNapel", "country of citizenship", "UK", "e1"),
                                     ("UK", "head of state", "Marge Simpson", "k5")],
                                    [("Doug TenNapel", "country of citizenship", "UK", "e1"),
                                     ("UK", "official language", "English", "k2")]]
    for chain in chains:  # no entity twice: Marge -> Doug -> UK -> Marge is not a question path
        entities = [name_key(chain.start)] + [name_key(e.object) for e in chain.edges]
        assert len(entities) == len(set(entities)), chain
    assert [("Marge Simpson", "creator", "Doug TenNapel", "k1"),
            ("Doug TenNapel", "country of citizenship", "UK", "e1")] in by_reason["backward"]
    assert [("Marge Simpson", "creator", "Doug TenNapel", "k1"),
            ("Doug TenNapel", "country of citizenship", "UK", "e1"),
            ("UK", "official language", "English", "k2")] in by_reason["through"]
    assert all(len(c) <= 3 for chains_ in by_reason.values() for c in chains_)
    assert ChainEdge("USA", "capital", "Washington", "k3") in [c.edges[-1] for c in chains if c.reason == "invalidated"]
    assert graph.ripple(edit, max_hops=2) and all(c.hops == 2 for c in graph.ripple(edit, max_hops=2))


def test_graph_structure_and_lookup(hop_case: dict[str, Any]) -> None:
    edits, facts = case_edits(hop_case)
    graph = EditGraph.from_edits(edits + facts)
    edit = edits[0]
    data = graph.graph.get_edge_data(name_key(edit.subject), name_key(edit.object))[edit.id]
    assert data["relation"] == edit.relation and data["superseded"] is False and data["status"] == "live"
    previous = graph.graph.get_edge_data(name_key(edit.subject), name_key(edit.previous_object or ""))
    assert [d["kind"] for d in previous.values()] == ["previous"] and all(d["superseded"] for d in previous.values())
    assert graph.graph.nodes[name_key(edit.subject)]["label"] == edit.subject
    found = graph.lookup(edit.subject.upper(), hop_case["requested_rewrite"][0]["relation_id"])
    assert [item.id for item in found] == [edit.id]
    assert graph.lookup(edit.subject, edit.relation, namespace="elsewhere") == []
    assert len(graph.live_edges()) == len(edits) + len(facts)
    near = graph.neighbourhood(edit.subject, radius=1)
    assert name_key(edit.object) in near.graph and name_key(hop_case["new_answer"]) not in near.graph


def test_contradictions_across_namespaces(hop_case: dict[str, Any]) -> None:
    edits, facts = case_edits(hop_case, namespace="alice")
    edit = edits[0]
    later = edit.created_at + timedelta(seconds=1)
    other = edit.model_copy(update={"namespace": "bob", "id": "bob1", "object": "Atlantis", "created_at": later})
    same = edit.model_copy(update={"namespace": "carol", "id": "carol1", "object": edit.object.upper()})
    stale = StoredEdit.of(edit.model_copy(update={"namespace": "dave", "id": "dave1", "object": "Lemuria"}),
                       status="superseded", superseded_by="dave2", ended_at=datetime.now(UTC))
    # same namespace and source as ``edit``: the store would supersede one of them, so it is no contradiction
    twin = edit.model_copy(update={"id": "alice2", "object": "Mu"})
    stored = [StoredEdit.of(e) for e in [*edits, *facts, other, same, twin]] + [stale]
    found = EditGraph(stored).contradictions()
    pairs = {frozenset(c.edit_ids) for c in found}
    assert frozenset({edit.id, "bob1"}) in pairs
    assert frozenset({"carol1", "bob1"}) in pairs
    assert frozenset({edit.id, "carol1"}) not in pairs, "same object (case-insensitive) is no contradiction"
    assert frozenset({edit.id, "alice2"}) not in pairs, "same namespace and source is no contradiction"
    assert all("dave1" not in c.edit_ids for c in found), "a superseded edit is not live"
    assert pairs == {frozenset(p) for p in [(edit.id, "bob1"), ("carol1", "bob1"), ("alice2", "bob1"),
                                              ("alice2", "carol1")]}
    first = next(c for c in found if set(c.edit_ids) == {edit.id, "bob1"})
    assert first.namespaces == ("alice", "bob") and first.objects == (edit.object, "Atlantis")


def test_deleted_edits_excluded_unless_asked() -> None:
    gone = StoredEdit.of(Edit(subject="A", relation="capital", object="B", id="d1"), status="deleted")
    assert EditGraph([gone]).graph.number_of_edges() == 0
    old = StoredEdit.of(Edit(subject="A", relation="capital", object="C", id="s1"), status="superseded",
                     superseded_by="d1")
    edge = EditGraph([old]).graph.edges[name_key("A"), name_key("C"), "s1"]
    assert edge["superseded"] is True and edge["superseded_by"] == "d1"
    kept = EditGraph([gone], include_deleted=True)
    assert kept.graph.edges[name_key("A"), name_key("B"), "d1"]["status"] == "deleted"
    assert kept.live_edges() == []


def test_json_round_trip_has_all_edges(hop_case: dict[str, Any], tmp_path: Path) -> None:
    edits, facts = case_edits(hop_case)
    graph = EditGraph.from_edits(edits + facts)
    data = json.loads(json.dumps(graph.to_json()))
    back = nx.node_link_graph(data, edges="edges", source="from", target="to", directed=True, multigraph=True)
    assert set(back.edges(keys=True)) == set(graph.graph.edges(keys=True))
    assert {edge["source"] for edge in data["edges"]} <= {"user", "mquake", "kb"}  # where each edit came from, kept
    assert graph.graph.number_of_edges() == len(edits) * 2 + len(facts)  # each edit also has its previous edge
    saved = json.loads(graph.save_json(tmp_path / "g.json").read_text(encoding="utf-8"))
    assert len(saved["edges"]) == graph.graph.number_of_edges()


def test_graphml_written_and_readable(hop_case: dict[str, Any], tmp_path: Path) -> None:
    edits, facts = case_edits(hop_case)
    graph = EditGraph.from_edits(edits + facts)
    path = graph.save_graphml(tmp_path / "g.graphml")
    back = nx.read_graphml(path, force_multigraph=True)
    assert back.number_of_edges() == graph.graph.number_of_edges()
    node = back.nodes[name_key(edits[0].subject)]
    assert json.loads(node["namespaces"]) == ["default"]


def test_draw_writes_png(hop_case: dict[str, Any], tmp_path: Path) -> None:
    edits, facts = case_edits(hop_case)
    graph = EditGraph.from_edits(edits + facts)
    path = graph.draw(tmp_path / "g.png", center=edits[0].subject, radius=2)
    content = path.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 1000
    with pytest.raises(KeyError):
        graph.draw(tmp_path / "missing.png", center="No Such Entity")
