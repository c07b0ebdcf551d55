"""The calibrated embedding scope detector: the top-1 edit by MiniLM cosine, in scope above a threshold.

No training at use time. The cosine is mapped to a probability by a 1-D logistic fit
(``CALIBRATION``, constants shipped here): on the training 80 % of PokeMQA's ``cls-filtered.json``
(``split_by_edit``, seed 0), one positive per question (the cosine to its own edit) and one negative
(the best cosine among the other training edits, i.e. the edit the detector would wrongly return),
so the p = 0.5 point is where a question's own edit and its best wrong edit are equally likely.
``editagent.train.scope.fit_calibration`` reproduces the constants (``benchmarks/scope_detector.py --calibrate``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from editagent.schema import SearchHit
from editagent.scope.base import Retriever, ScopeDetector, ScopeModel, Verdict
from editagent.view import EditView

# Cosine similarity (all-MiniLM-L6-v2) of the top-1 edit to the subquestion at or above which
# ``threshold_scope`` keeps the edit: the plain detector PokeMQA and the MQuAKE benchmark use by default
# (why 0.6: docs/decisions.md). The calibrated threshold (``CALIBRATION.threshold``) is the p = 0.5 point of the
# fit below; benchmarks/results/scope_detector.md compares both on held-out edits.
DEFAULT_SCOPE_THRESHOLD = 0.6


@dataclass(frozen=True)
class Calibration:
    """p(in scope | cosine) = sigmoid(slope * cosine + intercept)."""

    slope: float
    intercept: float

    @property
    def threshold(self) -> float:
        """The cosine where p = 0.5."""
        return -self.intercept / self.slope

    def probability(self, cosine: np.ndarray | float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * np.asarray(cosine, dtype=np.float64) + self.intercept)))


# Fit by ``editagent.train.scope.fit_calibration`` on the training split (seed 0, one question per edit, every
# training edit as the memory), all-MiniLM-L6-v2.
CALIBRATION = Calibration(slope=28.816, intercept=-19.614)


def threshold_scope(retrieve: Retriever, threshold: float = DEFAULT_SCOPE_THRESHOLD) -> ScopeDetector:
    """A scope detector from a top-1 retriever: its hit is in scope when ``hit.score >= threshold``."""

    def scope(subquestions: Sequence[str], namespaces: Sequence[str]) -> list[SearchHit | None]:
        hits = retrieve(subquestions, namespaces)
        return [hit if hit is not None and hit.score >= threshold else None for hit in hits]

    return scope


class EmbeddingScopeDetector(ScopeModel):
    """Top-1 edit by cosine; in scope when the cosine reaches ``threshold`` (default: the calibrated one)."""

    name = "embedding"

    def __init__(self, embedder: Any = None, *, threshold: float | None = None,
                 calibration: Calibration = CALIBRATION) -> None:
        if embedder is None:
            from editagent.models import load_embedder  # noqa: PLC0415 - loads torch

            embedder = load_embedder()
        self.embedder = embedder
        self.calibration = calibration
        self.threshold = calibration.threshold if threshold is None else threshold

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(list(sentences))

    def in_scope(self, question: str, edit_sentences: Sequence[str]) -> list[float]:
        cosines = self.encode(edit_sentences) @ self.encode([question])[0]
        return [float(p) for p in self.calibration.probability(cosines)]

    def judge(self, questions: Sequence[str], sentences: Sequence[str], *, vectors: np.ndarray | None = None,
              exclude: Sequence[frozenset[int]] | None = None) -> list[Verdict]:
        if not sentences:
            return [Verdict(None, None, 0.0) for _ in questions]
        scores = self.similarities(questions, sentences, vectors, exclude)
        verdicts = []
        for row in scores:
            best = int(np.argmax(row))
            cosine = float(row[best])
            if not math.isfinite(cosine):
                verdicts.append(Verdict(None, None, 0.0))
                continue
            verdicts.append(Verdict(best if cosine >= self.threshold else None, best,
                                    float(self.calibration.probability(cosine))))
        return verdicts

    def over(self, memory: EditView) -> ScopeDetector:
        """Through the memory's own FAISS index (``top1``); its embedder must be the one calibrated (MiniLM)."""
        return threshold_scope(memory.top1, self.threshold)
