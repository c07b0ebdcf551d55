"""A namespace's live edits, indexed for the reasoner: exact (entity, relation) lookups, each entity's relations,
and the entity linker. Built once per version of the store and kept (``ViewCache``), so a question answered from
edits costs dictionary lookups, not a scan of the namespace."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from editagent.graph import entity_key
from editagent.linking import EntityLinker
from editagent.schema import StoredEdit


def match_key(name: str) -> str:
    """``graph.entity_key`` made looser for matching a model's wording: punctuation and a leading "the" dropped
    ("J.K. Rowling" / "J. K. Rowling", "The Beatles" / "Beatles")."""
    key = entity_key(re.sub(r"[^\w\s]", " ", name))
    return key[4:] if key.startswith("the ") else ("" if key == "the" else key)


def same_entity(a: str, b: str) -> bool:
    """Whether two names plausibly denote one entity: equal keys, or one the whole-word start or end of the other
    ("United States" / "United States of America"), that part at least two words (one word alone is too weak a clue:
    "Paris" / "Paris Hilton"; and inside a name, "Great Britain" / "United Kingdom of Great Britain and Ireland", the
    part names something else)."""
    ka, kb = match_key(a), match_key(b)
    if not ka or not kb:
        return False
    if ka == kb:
        return True
    short, long = sorted((ka, kb), key=len)
    return " " in short and (long.startswith(short + " ") or long.endswith(" " + short))


@dataclass
class StoreView:
    """Live edits by (entity, relation) and by entity; the linker of the names they use."""

    by_key: dict[tuple[str, str], StoredEdit]
    by_relation: dict[str, list[StoredEdit]]
    by_entity: dict[str, dict[str, StoredEdit]]  # entity key (subject or alias) -> relation -> edit
    subjects: list[str]
    linker: EntityLinker = field(repr=False)

    @classmethod
    def build(cls, stored: Sequence[StoredEdit]) -> StoreView:
        by_key: dict[tuple[str, str], StoredEdit] = {}
        by_relation: dict[str, list[StoredEdit]] = defaultdict(list)
        by_entity: dict[str, dict[str, StoredEdit]] = defaultdict(dict)
        aliases: dict[str, list[str]] = defaultdict(list)
        for item in stored:  # creation order: a later edit of the same key wins
            by_key[(match_key(item.subject), item.relation)] = item
            by_relation[item.relation].append(item)
            for name in (item.subject, *item.aliases):
                by_entity[match_key(name)][item.relation] = item
            aliases[item.subject].extend(a for a in item.aliases if a not in aliases[item.subject])
        linker = EntityLinker.build(aliases.items())
        return cls(by_key, dict(by_relation), dict(by_entity), list(aliases), linker)

    def find(self, entity: str, relation: str) -> StoredEdit | None:
        """The live edit on (entity, relation): exactly, through an alias, or by a plausible variant of the name."""
        key = match_key(entity)
        exact = self.by_key.get((key, relation)) or self.by_entity.get(key, {}).get(relation)
        if exact is not None:
            return exact
        matches = [s for s in self.by_relation.get(relation, []) if same_entity(entity, s.subject)]
        return matches[-1] if matches else None

    def held(self, entity: str) -> dict[str, StoredEdit]:
        """The entity's live edits by relation (by its name or an alias; empty when it has none)."""
        return self.by_entity.get(match_key(entity), {})

    @property
    def relations(self) -> list[str]:
        return list(self.by_relation)


class ViewCache:
    """One ``StoreView`` per namespace, rebuilt only when the store has changed since (``version``)."""

    def __init__(self, load: Callable[[str], Sequence[StoredEdit]], version: Callable[[], object] | None) -> None:
        self._load = load
        self._version = version
        self._views: dict[str, tuple[object, StoreView]] = {}

    def get(self, namespace: str) -> StoreView:
        version = self._version() if self._version is not None else None
        cached = self._views.get(namespace)
        if cached is not None and version is not None and cached[0] == version:
            return cached[1]
        view = StoreView.build(self._load(namespace))
        self._views[namespace] = (version, view)
        return view
