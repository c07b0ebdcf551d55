"""One interface for scope detectors: pair probabilities, a decision over a memory, and the callable
the reasoning loops take.

A scope detector (PokeMQA, Gu et al. 2023) decides whether a stored edit is in scope of a
(sub)question: if one is, the loop answers with the edit; if none is, the model answers itself.
``ScopeDetector`` is the callable shape ``PokeMQA`` (and MeLLo's retriever slot) accepts;
``ScopeModel.over(memory)`` turns any detector into one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from editagent.schema import SearchHit
from editagent.view import EditView

ScopeDetector = Callable[[Sequence[str], Sequence[str]], list[SearchHit | None]]
"""(subquestions, the namespace each one is asked in) -> per subquestion, the stored edit in scope of it,
or None (the model answers from its own knowledge). Same shape as MeLLo's ``Retriever``."""

Retriever = Callable[[Sequence[str], Sequence[str]], list[SearchHit | None]]
"""(queries, namespaces) -> the top-1 hit per query, e.g. ``EditMemory.top1``."""


@dataclass(frozen=True)
class Verdict:
    """The detector's decision for one question over a list of edit sentences.

    ``index``: the edit in scope, or None (no edit applies). ``best``: the top candidate whether or
    not it passed (None when nothing was a candidate), with its ``probability`` of being in scope.
    """

    index: int | None
    best: int | None
    probability: float


class ScopeModel(ABC):
    """A scope detector: ``in_scope`` scores pairs, ``judge`` decides over a list of edits."""

    name: str

    @abstractmethod
    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Unit-length vectors of the edit sentences, in the space ``judge`` searches (pass them back as
        ``vectors`` to judge many question batches over one memory without re-encoding it)."""

    @abstractmethod
    def in_scope(self, question: str, edit_sentences: Sequence[str]) -> list[float]:
        """Per edit, the probability that it is in scope of ``question`` (judged pair by pair)."""

    @abstractmethod
    def judge(self, questions: Sequence[str], sentences: Sequence[str], *, vectors: np.ndarray | None = None,
              exclude: Sequence[frozenset[int]] | None = None) -> list[Verdict]:
        """Per question, the edit of ``sentences`` in its scope or None; ``exclude[i]`` lists edits that
        question ``i`` must not see (the evaluation removes a question's own edits this way)."""

    def similarities(self, questions: Sequence[str], sentences: Sequence[str], vectors: np.ndarray | None,
                     exclude: Sequence[frozenset[int]] | None) -> np.ndarray:
        """Questions x edits cosines in the ``encode`` space, excluded pairs at -inf: where ``judge`` starts."""
        vectors = self.encode(sentences) if vectors is None else vectors
        return mask_excluded(self.encode(questions) @ vectors.T, exclude)

    def over(self, memory: EditView) -> ScopeDetector:
        """The ``ScopeDetector`` callable over the live edits of ``memory``, namespace by namespace.

        Edit vectors are cached per namespace by edit id and only new edits are encoded; a hit's
        ``score`` is the detector's probability.
        """
        cache: dict[str, dict[str, np.ndarray]] = {}

        def scope(questions: Sequence[str], namespaces: Sequence[str]) -> list[SearchHit | None]:
            found: list[SearchHit | None] = [None] * len(questions)
            for namespace in dict.fromkeys(namespaces):
                rows = [i for i, ns in enumerate(namespaces) if ns == namespace]
                live = memory.edits(namespace)
                if not live:
                    continue
                known = cache.setdefault(namespace, {})
                new = [edit for edit in live if edit.id not in known]
                if new:
                    known.update(zip([e.id for e in new], self.encode([e.sentence for e in new]), strict=True))
                vectors = np.stack([known[edit.id] for edit in live])
                verdicts = self.judge([questions[i] for i in rows], [e.sentence for e in live], vectors=vectors)
                for i, verdict in zip(rows, verdicts, strict=True):
                    if verdict.index is not None:
                        edit = live[verdict.index]
                        found[i] = SearchHit(id=edit.id, memory=edit.sentence, score=verdict.probability, edit=edit)
            return found

        return scope


def mask_excluded(scores: np.ndarray, exclude: Sequence[frozenset[int]] | None) -> np.ndarray:
    """``scores`` (questions x edits) with each row's excluded edits set to -inf (a copy when changed)."""
    if exclude is None:
        return scores
    scores = scores.copy()
    for row, banned in enumerate(exclude):
        if banned:
            scores[row, list(banned)] = -np.inf
    return scores
