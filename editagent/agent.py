"""EditAgent: the controller. Read ``ask`` top to bottom to see where a query goes.

It composes the edit memory (what changed), the edit graph (what that ripples
into) and a reasoning loop over an LLM (how a question uses it). Heavy parts
load on first use, so storing and listing edits never loads a language model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from editagent.decompose.chain import Decomposer, check_decomposer
from editagent.decompose.methods import REASONERS, Parts, Reasoner, build_reasoner
from editagent.graph import EditGraph
from editagent.llm.base import LLM
from editagent.memory import EditMemory, Written
from editagent.models import DEFAULT_EMBEDDER, DEFAULT_LLM, Embedder, load_embedder, quiet_loading
from editagent.policy import WEIGHTS_KEY, EditPolicy, EditTarget, weight_prompt
from editagent.schema import (
    DEFAULT_MAX_HOPS,
    DEFAULT_NAMESPACE,
    Answer,
    Edit,
    EditError,
    SearchHit,
    StoredEdit,
    check_namespace,
    check_question,
)
from editagent.scope import scope_model
from editagent.scope.base import ScopeModel
from editagent.view import IN_MEMORY_KEY, RecallableEdits

logger = logging.getLogger(__name__)

Method = Literal["agent", "mello", "mello-guided", "pokemqa", "no-edit"]


class EditAgent:
    """Tell it what changed; ask it questions that depend on it.

    >>> agent = EditAgent()                                   # ./memory/default, packaged models
    >>> agent.edit("Doug TenNapel", "country of citizenship", "United Kingdom")
    >>> agent.ask("Which country is the creator of Marge Simpson a citizen of?").text

    ``store``: a store name under ``./memory`` or a path; ``namespace``: whose edits (one per user or agent).
    Both are keyword-only, so a path is never mistaken for a namespace.

    ``method``: how questions are answered (``editagent.decompose.methods.REASONERS``). ``"agent"`` (default)
    walks the question's relation chain through the store and lets the model answer only the hops no edit
    covers; a question no edit touches gets the plain model's answer. ``"mello"``, ``"mello-guided"`` and
    ``"pokemqa"`` are the loops from the literature, kept for comparison; ``"no-edit"`` is the plain model.
    ``max_hops``: the most hops one question may take, for every method. ``decomposer`` (the agent method):
    ``"rules"`` reads questions with cue phrases and word order; ``"llm"`` asks the model for the chain (for capable
    backends); ``"auto"`` asks the model only about what the rules left unanswered from the edits. ``scope``: what
    judges the agent method's search hits: the calibrated embedding threshold, ``"trained"`` (the PokeMQA-style
    detector, trained once by ``editagent scope train``), or any ``ScopeModel``.

    ``policy``: where new edits go (memory by default; see ``editagent.policy`` for why). Edits
    written into the weights are recorded in the store with their saved deltas, undone by
    ``forget`` or supersession, and re-applied to a fresh model by ``restore_weights``.
    ``weight_editor``: a ready ROME/MEMIT instance for this model (else one is built from the policy).
    ``progress``: show the models' loading progress bars on stderr (off by default).
    """

    def __init__(self, *, store: str | Path = "default", namespace: str = DEFAULT_NAMESPACE,
                 llm: LLM | str | None = None, embedder: Embedder | str | None = None,
                 memory: EditMemory | None = None, max_hops: int = DEFAULT_MAX_HOPS, method: Method = "agent",
                 decomposer: Decomposer = "rules", scope: ScopeModel | Literal["embedding", "trained"] = "embedding",
                 policy: EditPolicy | None = None, weight_editor: Any | None = None, progress: bool = False) -> None:
        if method not in REASONERS:
            raise EditError(f"method: {method!r} is not one of {', '.join(map(repr, REASONERS))}")
        self.method = method
        self.decomposer = check_decomposer(decomposer)
        self.scope = scope_model(scope)
        self.namespace = check_namespace(namespace)
        self.progress = progress
        if memory is None:
            if embedder is None or isinstance(embedder, str):
                with quiet_loading(progress):
                    embedder = load_embedder(embedder or DEFAULT_EMBEDDER)
            memory = EditMemory(store, embedder=embedder)
        self.memory = memory
        self._llm = llm
        self.max_hops = max_hops
        self.policy = policy or EditPolicy()
        self._weight_editor = weight_editor
        self._in_weights: list[tuple[str, Any]] = []  # (edit id, AppliedEdit), in order of application
        self._reasoner: Reasoner | None = None

    @property
    def llm(self) -> LLM:
        if self._llm is None or isinstance(self._llm, str):
            from editagent.llm.transformers_llm import TransformersLLM  # noqa: PLC0415 - torch loads with the model

            with quiet_loading(self.progress):
                self._llm = TransformersLLM.load(self._llm or DEFAULT_LLM)
        return self._llm

    # -- edits -----------------------------------------------------------------------------------

    def edit(self, subject: str | Edit, relation: str | None = None, object: str | None = None, *,
             to: EditTarget | None = None, **fields: Any) -> StoredEdit:
        """Store one changed fact in this agent's namespace; returns the stored row with its id.

        ``to``: "memory", "weights" or "both" (default: the policy's). ``fields``: previous_object,
        sentence, source, metadata, id (see ``Edit``).
        """
        target = self.policy.target(to)
        if isinstance(subject, Edit):
            edit = self._own(subject)
        else:
            if relation is None or object is None:
                raise EditError("relation, object: both are required with a subject")
            edit = Edit(subject=subject, relation=relation, object=object, namespace=self.namespace, **fields)
        written = self.memory.write(edit)[0] if target == "memory" else self._edit_weights(edit, target)
        self._drop_superseded([written])
        return written.edit

    def edit_many(self, edits: Iterable[Edit | dict[str, Any]], *,
                  progress: bool | None = None) -> list[StoredEdit]:
        """Store a batch in one transaction: all of it, or (on any bad edit) none of it. Memory only: weight
        edits are made one at a time with ``edit(..., to="weights")``."""
        batch = []
        for index, item in enumerate(edits):
            if isinstance(item, Edit):
                batch.append(self._own(item))
            elif isinstance(item, dict):
                batch.append(Edit(**{**item, "namespace": self.namespace}))
            else:
                raise EditError(f"edits[{index}]: must be an Edit or a dict of its fields, got {type(item).__name__}")
        written = self.memory.write(batch, progress=progress)
        self._drop_superseded(written)
        return [row.edit for row in written]

    def _drop_superseded(self, written: Iterable[Written]) -> None:
        """A superseded edit's weight edit, if this model holds one, comes out of the model: every write path
        goes through here, so a fact is stored and held the same way whichever face wrote it."""
        for row in written:
            if row.superseded is not None:
                self._remove_from_weights(row.superseded)

    def _own(self, edit: Edit) -> Edit:
        return edit if edit.namespace == self.namespace else edit.model_copy(update={"namespace": self.namespace})

    def edits(self, *, include_history: bool = False) -> list[StoredEdit]:
        return self.memory.edits(self.namespace, include_history=include_history)

    def search(self, query: str, *, limit: int = 5) -> list[SearchHit]:
        return self.memory.search(query, namespace=self.namespace, limit=limit)

    def get(self, edit_id: str) -> StoredEdit | None:
        stored = self.memory.get(edit_id)
        return stored if stored and stored.namespace == self.namespace else None

    def forget(self, edit_id: str) -> StoredEdit:
        """Delete an edit of this namespace (it stays in history), taking it out of the weights if it is there;
        an id of another namespace is unknown here."""
        if self.get(edit_id) is None:
            raise EditError(f"id: no edit {edit_id!r} in namespace {self.namespace!r}")
        deleted = self.memory.delete(edit_id)
        self._remove_from_weights(edit_id)
        return deleted

    # -- weights ---------------------------------------------------------------------------------

    def weight_edits(self) -> list[str]:
        """Ids of the edits this agent's model holds in its weights now, in order of application."""
        return [edit_id for edit_id, _ in self._in_weights]

    def _editor(self) -> Any:
        if self._weight_editor is None:
            from editagent.editors.registry import make_editor  # noqa: PLC0415 - torch-heavy, weights only
            from editagent.llm import TransformersLLM as Local  # noqa: PLC0415

            if not isinstance(self.llm, Local):
                raise EditError("to: weight edits need a local transformers model (TransformersLLM); "
                                f"this agent's LLM is {type(self.llm).__name__}. Use to='memory'")
            self._weight_editor = make_editor(self.llm.model, self.llm.tokenizer, self.policy.editor)
        return self._weight_editor

    def _edit_weights(self, edit: Edit, target: EditTarget) -> Written:
        """Write the edit into the weights, then record it (with its deltas) in the store; all or nothing."""
        from editagent.editors import WeightEdit  # noqa: PLC0415

        prompt = weight_prompt(edit)
        at = prompt.casefold().index(edit.subject.casefold())
        editor = self._editor()
        handle = editor.apply([WeightEdit(prompt=prompt, subject=prompt[at: at + len(edit.subject)],
                                          target=edit.object)])
        try:
            folder = self.memory.path / "weights"
            folder.mkdir(parents=True, exist_ok=True)  # a database store's home folder may not exist yet
            handle.save(folder / f"{edit.id}.pt")
            record = {"method": handle.method, "fingerprint": handle.fingerprint, "file": f"weights/{edit.id}.pt",
                      "model": getattr(self.llm, "name", "")}
            edit = edit.model_copy(update={"metadata": {**edit.metadata, WEIGHTS_KEY: record,
                                                        IN_MEMORY_KEY: target == "both"}})
            written = self.memory.write(edit)[0]
        except BaseException:
            handle.undo()
            raise
        self._in_weights.append((written.edit.id, handle))
        return written

    def _remove_from_weights(self, edit_id: str) -> None:
        """Undo one weight edit: later ones are undone first and re-applied after (undo is last-in-first-out)."""
        ids = self.weight_edits()
        if edit_id not in ids:
            return
        from editagent.editors import apply_deltas  # noqa: PLC0415

        at = ids.index(edit_id)
        later = self._in_weights[at + 1:]
        for _, handle in reversed(self._in_weights[at:]):
            handle.undo()
        self._in_weights = self._in_weights[:at] + [
            (later_id, apply_deltas(handle.model, handle.saved())) for later_id, handle in later]

    def restore_weights(self) -> list[str]:
        """Re-apply this namespace's live weight edits (from their saved deltas) to a model that lacks them,
        e.g. after a restart; a fingerprint check refuses another model. Returns the ids applied."""
        from editagent.editors import apply_deltas  # noqa: PLC0415

        held = set(self.weight_edits())
        applied = []
        for stored in self.edits():
            record = stored.metadata.get(WEIGHTS_KEY)
            if not record or stored.id in held:
                continue
            handle = apply_deltas(self._editor().model, self.memory.path / record["file"])
            self._in_weights.append((stored.id, handle))
            applied.append(stored.id)
        return applied

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
        questions = [check_question(question) for question in questions]
        # Every method reads the store without the edits that live only in the weights (the model answers
        # those), and gets the model through a function: a question answered from edits never loads it.
        if self._reasoner is None:  # kept: it caches the store's index and the relations' embeddings
            parts = Parts(llm=lambda: self.llm, source=RecallableEdits(self.memory), max_hops=self.max_hops,
                          decomposer=self.decomposer, scope=self.scope)
            self._reasoner = build_reasoner(self.method, parts)
        return self._reasoner.answer_many(questions, [self.namespace] * len(questions))

    def close(self) -> None:
        self.memory.close()

    def __enter__(self) -> EditAgent:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
