"""Recall rate and block rate of a scope detector on held-out edits.

Definitions used (after PokeMQA, Gu et al. 2023; the memory is ALL held-out edits):

* recall rate: over every (question, edit) of the held-out edits, the fraction for which the detector
  returns an edit in scope of the question (its own edit, or another held-out edit listing the same
  question or on the same subject and relation) *as in scope*, i.e. past the detector's own threshold;
* block rate: the same questions, with every edit in their scope removed from the memory, so that no
  edit applies: the fraction for which the detector returns nothing.

PokeMQA's training scripts count recall as "the own edit scores above every other edit", with no
threshold; that number is reported too, as ``top1`` (the best candidate is in scope of the question,
whether or not it passed the threshold; 0 where the detector had no candidate at all).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from editagent.eval.scope_data import ScopeEdit, in_scope_sets
from editagent.scope.base import ScopeModel


@dataclass(frozen=True)
class ScopeMetrics:
    detector: str
    recall: float
    block_rate: float
    n: int
    top1: float
    n_edits: int
    seconds_eval: float

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(detector: ScopeModel, edits: Sequence[ScopeEdit], *, label: str | None = None,
             batch: int = 512) -> ScopeMetrics:
    """Recall and block rate of ``detector`` with ``edits`` (the held-out split) as the memory."""
    started = time.perf_counter()
    questions, gold, _ = in_scope_sets(edits)
    sentences = [edit.sentence for edit in edits]
    vectors = detector.encode(sentences)
    recalled = blocked = top1 = 0
    for start in range(0, len(questions), batch):
        chunk, sets = questions[start: start + batch], gold[start: start + batch]
        kept = detector.judge(chunk, sentences, vectors=vectors)
        hidden = detector.judge(chunk, sentences, vectors=vectors, exclude=sets)
        recalled += sum(v.index is not None and v.index in s for v, s in zip(kept, sets, strict=True))
        top1 += sum(v.best is not None and v.best in s for v, s in zip(kept, sets, strict=True))
        blocked += sum(v.index is None for v in hidden)
    n = len(questions)
    return ScopeMetrics(detector=label or detector.name, recall=recalled / n, block_rate=blocked / n, n=n,
                        top1=top1 / n, n_edits=len(edits), seconds_eval=round(time.perf_counter() - started, 1))
