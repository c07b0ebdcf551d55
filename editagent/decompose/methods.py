"""The reasoning methods, in one table: how a name ("agent", "mello", ...) becomes a reasoner.

``EditAgent(method=...)`` and the MQuAKE benchmark both build their reasoner here, so a method means the
same thing in both. Every reasoner answers ``answer_many(questions, namespaces)``; ``max_hops`` is, for
all of them, the most hops (subquestions) one question may take.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from editagent.decompose.chain import ChainReasoner, Decomposer
from editagent.decompose.direct import answer_directly
from editagent.decompose.incontext import IKE, SERAC, encoder_of
from editagent.decompose.mello import MeLLo
from editagent.decompose.pokemqa import PokeMQA
from editagent.llm.base import LLM
from editagent.schema import DEFAULT_MAX_HOPS, DEFAULT_NAMESPACE, Answer, EditError
from editagent.scope.base import ScopeModel
from editagent.scope.embedding import CALIBRATION, threshold_scope
from editagent.view import EditView


class Reasoner(Protocol):
    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]: ...


@dataclass(frozen=True)
class Parts:
    """What a reasoner is built from. ``llm`` is a function so that a method that may not need the model (the
    agent, on a question its edits answer) does not load it."""

    llm: Callable[[], LLM]
    source: EditView
    max_hops: int = DEFAULT_MAX_HOPS
    decomposer: Decomposer = "rules"  # the agent method's: see ChainReasoner
    scope: ScopeModel | None = None  # the retrieval tier's detector (agent method); None: the embedding threshold


class PlainModel:
    """The model answers each question itself, after MQuAKE's few-shot multi-hop prompt: no edit is consulted.
    The "no edit" baseline, and what a model with edits in its weights is asked."""

    def __init__(self, llm: LLM, method: str = "no-edit") -> None:
        self.llm = llm
        self.method = method

    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]:
        started = time.perf_counter()
        namespaces = list(namespaces) if namespaces is not None else [DEFAULT_NAMESPACE] * len(questions)
        outputs = answer_directly(self.llm, questions)
        seconds = (time.perf_counter() - started) / max(len(questions), 1)
        return [Answer(question=q, text=text, method=self.method, namespace=ns, llm_calls=1, raw=raw, seconds=seconds)
                for q, ns, (text, raw) in zip(questions, namespaces, outputs, strict=True)]


def _mello(parts: Parts, *, guided: bool, name: str) -> MeLLo:
    reasoner = MeLLo(parts.llm(), parts.source.top1, max_hops=parts.max_hops, guided=guided)
    reasoner.method = name
    return reasoner


REASONERS: dict[str, Callable[[Parts], Reasoner]] = {
    "agent": lambda parts: ChainReasoner(parts.llm, parts.source, max_hops=parts.max_hops,
                                         decomposer=parts.decomposer, scope=parts.scope),
    "mello": lambda parts: _mello(parts, guided=False, name="mello"),
    "mello-guided": lambda parts: _mello(parts, guided=True, name="mello-guided"),
    "pokemqa": lambda parts: PokeMQA(parts.llm(), threshold_scope(parts.source.top1), max_hops=parts.max_hops),
    "ike": lambda parts: IKE(parts.llm(), parts.source.search_many, encoder_of(parts.source)),
    "serac": lambda parts: SERAC(parts.llm(), parts.scope.over(parts.source) if parts.scope is not None
                                 else threshold_scope(parts.source.top1, CALIBRATION.threshold)),
    "no-edit": lambda parts: PlainModel(parts.llm()),
}
"""Method name -> builder. ``agent``: the editagent method (``ChainReasoner``); ``mello``: the MQuAKE paper's
loop unchanged; ``mello-guided``: MeLLo with its verdicts scored (for small models); ``pokemqa``: PokeMQA with
the embedding scope detector; ``ike``: in-context editing with retrieved demonstrations; ``serac``: a scope
classifier and a counterfactual model over the store (both in ``incontext``); ``no-edit``: the plain model."""


def build_reasoner(method: str, parts: Parts) -> Reasoner:
    """The reasoner for ``method`` (a key of ``REASONERS``); ``EditError`` naming the field otherwise."""
    builder = REASONERS.get(method)
    if builder is None:
        raise EditError(f"method: {method!r} is not one of {', '.join(map(repr, REASONERS))}")
    return builder(parts)
