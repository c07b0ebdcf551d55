"""The one view of the store reasoners read (``editagent.view``): its members, what it hides, its versions."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import editagent
from editagent.decompose.store_view import ViewCache
from editagent.memory import EditMemory
from editagent.schema import Edit, StoredEdit
from editagent.view import IN_MEMORY_KEY, EditView, RecallableEdits, in_memory


def _parameters(member: Any) -> list[str]:
    return [name for name in inspect.signature(member).parameters if name != "self"]


def test_the_memory_and_the_recallable_view_are_edit_views(store_path: Path, embedder: Any) -> None:
    members = {name for name in vars(EditView) if not name.startswith("_")}
    assert members == {"embedder", "version", "edits", "lookup", "search_many", "top1"}
    with EditMemory(store_path, embedder=embedder) as memory:
        for source in (memory, RecallableEdits(memory)):
            assert source.embedder is embedder
            for name in members - {"embedder"}:
                wanted, has = _parameters(getattr(EditView, name)), _parameters(getattr(source, name))
                assert has[0] == wanted[0] and set(wanted) <= set(has), (type(source).__name__, name)


def test_weights_only_edits_are_hidden_from_reasoners(store_path: Path, embedder: Any) -> None:
    with EditMemory(store_path, embedder=embedder) as memory:
        kept = Edit(subject="Paris", relation="country", object="Japan")
        hidden = Edit(subject="Berlin", relation="country", object="Peru", metadata={IN_MEMORY_KEY: False})
        memory.add([kept, hidden])
        view = RecallableEdits(memory)
        assert not in_memory(hidden) and in_memory(kept)
        assert [e.id for e in view.edits()] == [kept.id] and len(memory.edits()) == 2
        assert view.lookup("Berlin", "country") is None and memory.lookup("Berlin", "country") is not None
        assert [h.id for h in view.search_many(["Which country is Berlin located in?"], limit=5)[0]] == [kept.id]
        top = view.top1(["Which country is Berlin located in?"], ["default"])[0]
        assert top is not None and top.id == kept.id


def test_a_namespace_view_is_rebuilt_only_after_its_own_writes(store_path: Path, embedder: Any) -> None:
    with EditMemory(store_path, embedder=embedder) as memory:
        view = RecallableEdits(memory)
        loads: list[str] = []

        def load(namespace: str) -> list[StoredEdit]:
            loads.append(namespace)
            return view.edits(namespace)

        cache = ViewCache(load, view.version)
        memory.add(Edit(subject="Paris", relation="country", object="Japan", namespace="alice"))
        assert cache.get("alice").find("Paris", "country") is not None
        memory.add(Edit(subject="Rome", relation="country", object="Peru", namespace="bob"))
        cache.get("alice")
        assert loads == ["alice"]  # another user's write leaves this view as it was
        memory.add(Edit(subject="Oslo", relation="country", object="Chile", namespace="alice"))
        assert cache.get("alice").find("Oslo", "country") is not None
        assert loads == ["alice", "alice"]


def test_no_other_module_declares_what_a_reasoner_reads() -> None:
    root = Path(editagent.__file__).parent
    declared = [path.relative_to(root).as_posix() for path in root.rglob("*.py")
                if re.search(r"^class EditSource\b", path.read_text(encoding="utf-8"), re.MULTILINE)]
    assert declared == []
    assert "RecallableEdits" not in (root / "policy.py").read_text(encoding="utf-8")
