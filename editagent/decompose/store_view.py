"""A namespace's live edits, indexed for the reasoner: exact (entity, relation) lookups, each entity's relations,
and the entity linker. Built once per version of the store and kept (``ViewCache``), so a question answered from
edits costs dictionary lookups, not a scan of the namespace."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from editagent.linking import EntityLinker
from editagent.names import name_key, same_entity
from editagent.schema import StoredEdit


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
            by_key[(name_key(item.subject), item.relation)] = item
            by_relation[item.relation].append(item)
            for name in (item.subject, *item.aliases):
                by_entity[name_key(name)][item.relation] = item
            aliases[item.subject].extend(a for a in item.aliases if a not in aliases[item.subject])
        linker = EntityLinker.build(aliases.items())
        return cls(by_key, dict(by_relation), dict(by_entity), list(aliases), linker)

    def find(self, entity: str, relation: str) -> StoredEdit | None:
        """The live edit on (entity, relation): exactly, through an alias, or by a plausible variant of the name."""
        key = name_key(entity)
        exact = self.by_key.get((key, relation)) or self.by_entity.get(key, {}).get(relation)
        if exact is not None:
            return exact
        matches = [s for s in self.by_relation.get(relation, []) if same_entity(entity, s.subject)]
        return matches[-1] if matches else None

    def held(self, entity: str) -> dict[str, StoredEdit]:
        """The entity's live edits by relation (by its name or an alias; empty when it has none)."""
        return self.by_entity.get(name_key(entity), {})

    @property
    def relations(self) -> list[str]:
        return list(self.by_relation)


class ViewCache:
    """One ``StoreView`` per namespace, rebuilt only when the namespace may have changed since (``version``)."""

    def __init__(self, load: Callable[[str], Sequence[StoredEdit]], version: Callable[[str], object]) -> None:
        self._load = load
        self._version = version
        self._views: dict[str, tuple[object, StoreView]] = {}

    def get(self, namespace: str) -> StoreView:
        version = self._version(namespace)
        cached = self._views.get(namespace)
        if cached is not None and cached[0] == version:
            return cached[1]
        view = StoreView.build(self._load(namespace))
        self._views[namespace] = (version, view)
        return view
