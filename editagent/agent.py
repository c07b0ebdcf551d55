"""EditAgent: the controller. Read ``ask`` top to bottom to see where a query goes.

It composes the edit memory (what changed), the edit graph (what that ripples
into) and a reasoning loop over an LLM (how a question uses it). Heavy parts
load on first use, so storing and listing edits never loads a language model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from editagent.decompose import MeLLo
from editagent.graph import EditGraph
from editagent.llm import LLM, TransformersLLM
from editagent.memory import EditMemory
from editagent.models import DEFAULT_EMBEDDER, DEFAULT_LLM, Embedder, load_embedder
from editagent.schema import DEFAULT_NAMESPACE, Answer, Edit, EditError, SearchHit, StoredEdit, check_namespace

logger = logging.getLogger(__name__)


class EditAgent:
    """Tell it what changed; ask it questions that depend on it.

    >>> agent = EditAgent()                                   # ./memory/default, packaged models
    >>> agent.edit("Doug TenNapel", "country of citizenship", "United Kingdom")
    >>> agent.ask("Which country is the creator of Marge Simpson a citizen of?").text
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, store: str | Path = "default", *,
                 llm: LLM | str | None = None, embedder: Embedder | str | None = None,
                 memory: EditMemory | None = None, max_hops: int = 4) -> None:
        self.namespace = check_namespace(namespace)
        if memory is None:
            if embedder is None or isinstance(embedder, str):
                embedder = load_embedder(embedder or DEFAULT_EMBEDDER)
            memory = EditMemory(store, embedder=embedder)
        self.memory = memory
        self._llm = llm
        self.max_hops = max_hops

    @property
    def llm(self) -> LLM:
        if self._llm is None or isinstance(self._llm, str):
            self._llm = TransformersLLM.load(self._llm or DEFAULT_LLM)
        return self._llm

    # -- edits -----------------------------------------------------------------------------------

    def edit(self, subject: str | Edit, relation: str | None = None, object: str | None = None, **fields: Any,
             ) -> Edit:
        """Store one changed fact in this agent's namespace; returns it with its id.

        ``fields``: previous_object, sentence, source, metadata, id (see ``Edit``).
        """
        if isinstance(subject, Edit):
            edit = self._own(subject)
        else:
            if relation is None or object is None:
                raise EditError("relation, object: both are required with a subject")
            edit = Edit(subject=subject, relation=relation, object=object, namespace=self.namespace, **fields)
        return self.memory.add(edit)[0]

    def edit_many(self, edits: Iterable[Edit | dict[str, Any]], *, progress: bool | None = None) -> list[Edit]:
        """Store a batch in one transaction: all of it, or (on any bad edit) none of it."""
        batch = [self._own(e) if isinstance(e, Edit) else Edit(**{**e, "namespace": self.namespace})
                 for e in edits]
        return self.memory.add(batch, progress=progress)

    def _own(self, edit: Edit) -> Edit:
        return edit if edit.namespace == self.namespace else edit.model_copy(update={"namespace": self.namespace})

    def edits(self, *, include_history: bool = False) -> list[StoredEdit]:
        return self.memory.edits(self.namespace, include_history=include_history)

    def search(self, query: str, *, limit: int = 5) -> list[SearchHit]:
        return self.memory.search(query, namespace=self.namespace, limit=limit)

    def get(self, edit_id: str) -> StoredEdit | None:
        stored = self.memory.get(edit_id)
        return stored if stored and stored.edit.namespace == self.namespace else None

    def forget(self, edit_id: str) -> StoredEdit:
        """Delete an edit of this namespace (it stays in history); an id of another namespace is unknown here."""
        if self.get(edit_id) is None:
            raise EditError(f"id: no edit {edit_id!r} in namespace {self.namespace!r}")
        return self.memory.delete(edit_id)

    def history(self, edit_id: str) -> list[StoredEdit]:
        if self.get(edit_id) is None:
            raise EditError(f"id: no edit {edit_id!r} in namespace {self.namespace!r}")
        return self.memory.history(edit_id)

    def graph(self, *, include_history: bool = True) -> EditGraph:
        """The knowledge-graph view of this namespace's edits (superseded ones as marked edges)."""
        return EditGraph(self.memory.edits(self.namespace, include_history=include_history))

    # -- questions -------------------------------------------------------------------------------

    def ask(self, question: str) -> Answer:
        """Answer a (multi-hop) question using this namespace's edits; the trace shows every hop."""
        return self.ask_many([question])[0]

    def ask_many(self, questions: Sequence[str]) -> list[Answer]:
        for question in questions:
            if not isinstance(question, str) or not question.strip():
                raise EditError("question: must be non-empty text")
        reasoner = MeLLo(self.llm, self.memory.top1, max_hops=self.max_hops)
        return reasoner.answer_many(questions, [self.namespace] * len(questions))

    def close(self) -> None:
        self.memory.close()

    def __enter__(self) -> EditAgent:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
