"""A graph view of stored edits: what an edit ripples into, and where namespaces disagree.

Retrieval finds one fact at a time; multi-hop questions chain facts. Building the
edits (and any known background facts) into a directed multigraph lets us list the
chains an edit changes, spot live edits that contradict each other, and export or
draw the neighbourhood of an entity for a person to inspect.

An entity is a node by ``names.name_key``, the key the store supersedes by. Imports nothing of editagent but the
schema, the relation table and the name keys, so the store, the agent and the CLI can all use it without import
cycles.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import networkx as nx

from editagent.names import name_key, text_key
from editagent.relations import canonical_relation, fact_sentence
from editagent.schema import Edit, StoredEdit

__all__ = ["PREVIOUS_SUFFIX", "ChainEdge", "Contradiction", "EditGraph", "RippleChain"]

logger = logging.getLogger(__name__)

EdgeKind = Literal["edit", "previous"]
RippleReason = Literal["forward", "backward", "through", "invalidated"]
_REASON_ORDER: dict[str, int] = {"forward": 0, "backward": 1, "through": 2, "invalidated": 3}
PREVIOUS_SUFFIX = ":previous"  # ':' never occurs in an edit id, so previous-edge keys cannot collide


def _relation_key(relation: str) -> str:
    return text_key(canonical_relation(relation))


class ChainEdge(NamedTuple):
    """One fact of a ripple chain, spelled as its edit spells it."""

    subject: str
    relation: str
    object: str
    edit_id: str


@dataclass(frozen=True)
class RippleChain:
    """A path of at least two facts that contains the edited (subject, relation).

    ``reason`` says how the path meets the edit: ``forward`` (the edit, then facts that start
    at the new object), ``backward`` (facts that lead into the subject, then the edit),
    ``through`` (both), ``invalidated`` (the path used the replaced fact, subject to
    ``previous_object``, and no longer holds).
    """

    edges: tuple[ChainEdge, ...]
    reason: RippleReason

    @property
    def start(self) -> str:
        return self.edges[0].subject

    @property
    def end(self) -> str:
        return self.edges[-1].object

    @property
    def hops(self) -> int:
        return len(self.edges)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "edges": [edge._asdict() for edge in self.edges]}


@dataclass(frozen=True)
class Contradiction:
    """Two live edits giving one (subject, relation) different objects, from different namespaces or sources.

    The pairs (``edit_ids``, ``namespaces``, ``sources``, ``objects``) are aligned: index 0 is the
    older edit, index 1 the newer one.
    """

    subject: str
    relation: str
    edit_ids: tuple[str, str]
    namespaces: tuple[str, str]
    sources: tuple[str, str]
    objects: tuple[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation, "edit_ids": list(self.edit_ids),
                "namespaces": list(self.namespaces), "sources": list(self.sources), "objects": list(self.objects)}


_Facts = list[ChainEdge]


class EditGraph:
    """Stored edits as a networkx ``MultiDiGraph`` of entities.

    Nodes are keyed by :func:`entity_key` and carry ``label`` (first spelling seen) and
    ``namespaces`` (sorted list). Each stored edit is one edge subject -> object keyed by the
    edit id, with ``kind="edit"``; an edit with ``previous_object`` also gets an edge
    subject -> previous_object keyed ``"<id>:previous"`` with ``kind="previous"`` and
    ``superseded=True``, so the replaced chain stays visible. Deleted edits are left out unless
    ``include_deleted``.
    """

    def __init__(self, stored: Iterable[StoredEdit], *, include_deleted: bool = False) -> None:
        self.include_deleted = include_deleted
        self.graph: nx.MultiDiGraph = nx.MultiDiGraph()
        self._stored: dict[str, StoredEdit] = {}
        for item in stored:
            if item.status == "deleted" and not include_deleted:
                continue
            if item.id in self._stored:
                logger.warning("edit id %s occurs twice; keeping the later one", item.id)
            self._stored[item.id] = item
        for item in self._stored.values():
            self._add(item)
        logger.debug("EditGraph: %d entities, %d edges from %d edits", self.graph.number_of_nodes(),
                     self.graph.number_of_edges(), len(self._stored))

    @classmethod
    def from_edits(cls, edits: Iterable[Edit]) -> EditGraph:
        """A graph of plain edits, all treated as live (for data that never went through a store)."""
        return cls(StoredEdit.of(edit) for edit in edits)

    @classmethod
    def _wrap(cls, graph: nx.MultiDiGraph, stored: dict[str, StoredEdit], include_deleted: bool) -> EditGraph:
        view = cls.__new__(cls)
        view.include_deleted = include_deleted
        view.graph = graph
        edge_ids = {data["edit_id"] for _, _, data in graph.edges(data=True)}
        view._stored = {edit_id: item for edit_id, item in stored.items() if edit_id in edge_ids}
        return view

    @property
    def nx(self) -> nx.MultiDiGraph:
        """The underlying networkx graph (same object as ``graph``)."""
        return self.graph

    def __len__(self) -> int:
        return len(self._stored)

    def __contains__(self, entity: object) -> bool:
        return isinstance(entity, str) and name_key(entity) in self.graph

    def get(self, edit_id: str) -> StoredEdit | None:
        """The stored edit behind an edge, or ``None`` if it is not in this graph."""
        return self._stored.get(edit_id)

    # ------------------------------------------------------------------ building

    def _add_node(self, name: str, namespace: str) -> str:
        key = name_key(name)
        if key not in self.graph:
            self.graph.add_node(key, label=name, namespaces=[namespace])
        else:
            namespaces = self.graph.nodes[key]["namespaces"]
            if namespace not in namespaces:
                namespaces.append(namespace)
                namespaces.sort()
        return key

    def _add(self, edit: StoredEdit) -> None:
        subject = self._add_node(edit.subject, edit.namespace)
        target = self._add_node(edit.object, edit.namespace)
        common = {
            "relation": edit.relation,
            "edit_id": edit.id,
            "namespace": edit.namespace,
            "source": edit.source,
            "created_at": edit.created_at.isoformat(),
            "subject": edit.subject,
        }
        self.graph.add_edge(
            subject, target, key=edit.id, kind="edit", object=edit.object, status=edit.status,
            superseded=edit.status != "live", sentence=edit.sentence, superseded_by=edit.superseded_by,
            ended_at=edit.ended_at.isoformat() if edit.ended_at else None, **common,
        )
        if edit.previous_object and name_key(edit.previous_object) != target:
            previous = self._add_node(edit.previous_object, edit.namespace)
            self.graph.add_edge(
                subject, previous, key=edit.id + PREVIOUS_SUFFIX, kind="previous", object=edit.previous_object,
                status="superseded", superseded=True,
                sentence=fact_sentence(edit.subject, edit.relation, edit.previous_object),
                superseded_by=edit.id, ended_at=edit.created_at.isoformat(), **common,
            )

    # ------------------------------------------------------------------ queries

    @staticmethod
    def _is_live(data: dict[str, Any]) -> bool:
        return data.get("kind") == "edit" and data.get("status") == "live"

    def live_edges(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Every live edit edge as ``(subject_key, object_key, edit_id, attributes)``, sorted for stable output."""
        edges = [(u, v, k, dict(d)) for u, v, k, d in self.graph.edges(keys=True, data=True) if self._is_live(d)]
        return sorted(edges, key=lambda edge: (edge[0], edge[3]["relation"], edge[1], edge[2]))

    def neighbourhood(self, entity: str, radius: int = 1) -> EditGraph:
        """The entities within ``radius`` edges of ``entity`` (either direction) and every edge among them.

        Raises ``KeyError`` for an entity the graph does not know, so a typo is not mistaken for isolation.
        """
        key = name_key(entity)
        if key not in self.graph:
            raise KeyError(f"entity {entity!r} is not in the graph")
        sub = nx.ego_graph(self.graph, key, radius=radius, undirected=True).copy()
        return EditGraph._wrap(sub, self._stored, self.include_deleted)

    def lookup(self, subject: str, relation: str, namespace: str | None = None) -> list[StoredEdit]:
        """The live edits for (subject, relation), case-insensitive, newest first; optionally one namespace only."""
        key = name_key(subject)
        if key not in self.graph:
            return []
        wanted = _relation_key(relation)
        found = [
            self._stored[data["edit_id"]]
            for _, _, data in self.graph.out_edges(key, data=True)
            if self._is_live(data) and text_key(data["relation"]) == wanted
            and (namespace is None or data["namespace"] == namespace)
        ]
        return sorted(found, key=lambda item: (item.created_at, item.id), reverse=True)

    def _walk(self, start: str, forward: bool, depth: int, avoid: frozenset[str], exclude_id: str,
              namespaces: Collection[str] | None) -> Iterator[tuple[_Facts, frozenset[str]]]:
        """Simple paths of 1..depth live edges leaving (``forward``) or entering ``start``, never visiting ``avoid``.

        Paths are yielded in reading order (subject to object) with the set of nodes they add.
        """
        def step(node: str, path: _Facts, seen: frozenset[str]) -> Iterator[tuple[_Facts, frozenset[str]]]:
            if len(path) >= depth:
                return
            edges = (self.graph.out_edges(node, keys=True, data=True) if forward
                     else self.graph.in_edges(node, keys=True, data=True))
            for u, v, _, data in sorted(edges, key=lambda e: (e[0], e[1], e[2])):
                if not self._is_live(data) or data["edit_id"] == exclude_id:
                    continue
                if namespaces is not None and data["namespace"] not in namespaces:
                    continue
                nxt = v if forward else u
                if nxt in seen or nxt in avoid:
                    continue
                fact = ChainEdge(data["subject"], data["relation"], data["object"], data["edit_id"])
                grown = [*path, fact] if forward else [fact, *path]
                added = seen | {nxt}
                yield grown, added
                yield from step(nxt, grown, added)

        yield from step(start, [], frozenset())

    def ripple(self, edit: Edit, max_hops: int = 3, *, namespaces: Collection[str] | None = None,
               limit: int = 10_000) -> list[RippleChain]:
        """The chains of live facts whose multi-hop answer the edit changes.

        "Would change" means: any multi-hop question whose reasoning path contains the edited
        (subject, relation) has a different answer after the edit. So every chain returned
        contains the edit's fact (subject, relation, object) -- or, for ``invalidated`` chains,
        the replaced fact (subject, relation, previous_object) -- plus at least one other live
        fact, at most ``max_hops`` facts in all, and visits no entity twice. Chains are:
        ``forward`` (edit, then facts from the new object), ``backward`` (facts into the
        subject, then the edit), ``through`` (both), and ``invalidated`` (the same shapes
        around the old fact, which no longer hold). The edit need not be in the graph, so a
        proposed edit can be checked before it is stored; its own edge is never reused.
        ``namespaces`` restricts the other facts to those namespaces; at most ``limit`` chains
        are returned (a warning is logged when more exist). An edit without
        ``previous_object`` yields no ``invalidated`` chains.
        """
        if max_hops < 2:
            return []
        subject, new_object = name_key(edit.subject), name_key(edit.object)
        room = max_hops - 1
        ends: list[tuple[ChainEdge, str, bool]] = [(ChainEdge(edit.subject, edit.relation, edit.object, edit.id),
                                                    new_object, False)]
        if edit.previous_object and name_key(edit.previous_object) != new_object:
            ends.append((ChainEdge(edit.subject, edit.relation, edit.previous_object, edit.id),
                         name_key(edit.previous_object), True))

        chains: list[RippleChain] = []
        backward = list(self._walk(subject, False, room, frozenset({subject}), edit.id, namespaces))
        for fact, target, old in ends:
            if target == subject:
                continue
            forward = list(self._walk(target, True, room, frozenset({subject, target}), edit.id, namespaces))
            before = [(path, seen) for path, seen in backward if target not in seen]
            for path, _ in forward:
                chains.append(RippleChain((fact, *path), "invalidated" if old else "forward"))
            for path, _ in before:
                chains.append(RippleChain((*path, fact), "invalidated" if old else "backward"))
            for head, head_seen in before:
                for tail, tail_seen in forward:
                    if len(head) + len(tail) + 1 <= max_hops and not head_seen & tail_seen:
                        chains.append(RippleChain((*head, fact, *tail), "invalidated" if old else "through"))
        chains.sort(key=lambda chain: (_REASON_ORDER[chain.reason], chain.hops, chain.edges))
        if len(chains) > limit:
            logger.warning("ripple of %s: %d chains, returning the first %d", edit.id, len(chains), limit)
            chains = chains[:limit]
        return chains

    def contradictions(self) -> list[Contradiction]:
        """Pairs of live edits that give one (subject, relation) different objects, across namespaces or sources.

        Within one namespace and source a newer edit supersedes the older, so only disagreement
        between namespaces (or between, say, user edits and a knowledge base) is a contradiction.
        """
        groups: dict[tuple[str, str], list[StoredEdit]] = defaultdict(list)
        for item in self._stored.values():
            if item.status == "live":
                groups[(name_key(item.subject), text_key(item.relation))].append(item)
        found: list[Contradiction] = []
        for items in groups.values():
            items.sort(key=lambda item: (item.created_at, item.id))
            for i, first in enumerate(items):
                for second in items[i + 1:]:
                    a, b = first, second
                    if name_key(a.object) == name_key(b.object):
                        continue
                    if a.namespace == b.namespace and a.source == b.source:
                        continue
                    found.append(Contradiction(a.subject, a.relation, (a.id, b.id), (a.namespace, b.namespace),
                                               (a.source, b.source), (a.object, b.object)))
        found.sort(key=lambda c: (name_key(c.subject), c.relation, c.edit_ids))
        return found

    # ------------------------------------------------------------------ export

    def to_json(self) -> dict[str, Any]:
        """Node-link data (``nodes`` and ``edges`` lists, an edge's ends under ``from`` and ``to``, so its own
        ``source``, where the edit came from, is kept); ``json.dumps`` accepts it as it is."""
        return copy.deepcopy(nx.node_link_data(self.graph, edges="edges", source="from", target="to"))

    def save_json(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=2), encoding="utf-8")
        return target

    def save_graphml(self, path: str | Path) -> Path:
        """Write GraphML; lists become JSON text and ``None`` becomes ``""``, since GraphML holds only scalars."""
        def scalar(value: Any) -> Any:
            if value is None:
                return ""
            if isinstance(value, list | set | tuple | dict):
                return json.dumps(sorted(value) if isinstance(value, set) else value, ensure_ascii=False)
            return value

        flat = nx.MultiDiGraph()
        for node, data in self.graph.nodes(data=True):
            flat.add_node(node, **{k: scalar(v) for k, v in data.items()})
        for u, v, key, data in self.graph.edges(keys=True, data=True):
            flat.add_edge(u, v, key=key, **{k: scalar(val) for k, val in data.items()})
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        nx.write_graphml(flat, target)
        return target

    def draw(self, path: str | Path, center: str | None = None, radius: int = 2) -> Path:
        """Write a PNG of the graph, or of ``center``'s neighbourhood: live edges solid, the rest dashed grey.

        matplotlib is imported here, with the Agg backend, so headless servers can draw and
        importing the graph module stays cheap.
        """
        import matplotlib  # noqa: PLC0415 - heavy import, only needed for drawing

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 - must follow matplotlib.use

        view = self.neighbourhood(center, radius) if center is not None else self
        graph = view.graph
        if graph.number_of_nodes() > 200:
            logger.warning("drawing %d entities; pass center= to draw a readable neighbourhood",
                           graph.number_of_nodes())
        side = min(30.0, 6.0 + 0.6 * graph.number_of_nodes())
        fig, ax = plt.subplots(figsize=(side, side * 0.75))
        try:
            if graph.number_of_nodes() == 0:
                ax.text(0.5, 0.5, "empty graph", ha="center", va="center")
            else:
                pos = nx.spring_layout(graph, seed=7, k=1.5 / max(1, graph.number_of_nodes()) ** 0.5)
                center_key = name_key(center) if center is not None else None
                colours = ["#f4a261" if node == center_key else "#a8dadc" for node in graph.nodes]
                nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colours, node_size=900)
                nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8,
                                        labels={n: d["label"] for n, d in graph.nodes(data=True)})
                edges = sorted(graph.edges(keys=True, data=True), key=lambda e: (e[0], e[1], e[2]))
                edgelist = [(u, v, k) for u, v, k, _ in edges]
                live = [self._is_live(d) for *_, d in edges]
                arcs = [f"arc3,rad={0.12 * (i + 1)}" for i in range(4)]
                nx.draw_networkx_edges(graph, pos, ax=ax, edgelist=edgelist, arrows=True, node_size=900,
                                       edge_color=["#1d3557" if ok else "#999999" for ok in live],
                                       style=["solid" if ok else "dashed" for ok in live], connectionstyle=arcs)
                nx.draw_networkx_edge_labels(graph, pos, ax=ax, font_size=7, node_size=900, connectionstyle=arcs,
                                             edge_labels={(u, v, k): d["relation"] for u, v, k, d in edges})
            ax.set_axis_off()
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(target, format="png", dpi=100, bbox_inches="tight")
        finally:
            plt.close(fig)
        return target
