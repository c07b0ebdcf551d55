"""Editing in the prompt, no weight changes: IKE and SERAC as reasoners beside MeLLo and PokeMQA.

**IKE** (Zheng et al., 2023, "Can We Edit Factual Knowledge by In-Context Learning?"): the prompt holds the new facts
and demonstrations chosen by similarity from a pool of three kinds, copy (a fact's own question), update (a
paraphrase of it) and retain (a question the fact does not touch, with its real answer), so that the examples teach
the model both to use a new fact and to leave other questions alone. The new facts are the edits of the question's
namespace that a search for the question finds; the pool ships as package data
(``prompts/ike-demonstrations.json``), written for this library on facts that are not in MQuAKE. The paper
retrieves 32 demonstrations for GPT-J; a 135M model reads fewer better (``IkeConfig.demonstrations``).

**SERAC** (Mitchell et al., 2022, "Memory-Based Model Editing at Scale"): a scope classifier decides whether an edit
of the memory applies to the question; if one does, a counterfactual model answers with that edit in its input,
otherwise the base model answers alone. Here the classifier is any scope detector (the trained cross-encoder when
``EditAgent(scope="trained")``, else the calibrated embedding one), the memory is the edit store, and the
counterfactual model is the base model reading the edit after a fixed few copy/update/retain examples of the same
pool (the paper trains a small model on such pairs).

Both answer a question in one generation, without decomposing it: on multi-hop questions they show what editing
without a reasoning loop reaches.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np

from editagent.decompose.direct import answer_directly, clean_answer
from editagent.decompose.mello import quote_fact
from editagent.llm.base import LLM
from editagent.schema import DEFAULT_NAMESPACE, Answer, EditError, Hop
from editagent.scope.base import ScopeDetector
from editagent.view import EditView

if TYPE_CHECKING:
    from editagent.memory.edit_memory import SearchMany

STOP = ("\n",)
MAX_NEW_TOKENS = 24
KINDS = ("copy", "update", "retain")


@dataclass(frozen=True)
class Demonstration:
    kind: str
    fact: str
    question: str
    answer: str

    def text(self) -> str:
        return f"New fact: {self.fact}\nQuestion: {self.question}\nAnswer: {self.answer}\n\n"


@cache
def demonstration_pool() -> tuple[Demonstration, ...]:
    """The shipped copy/update/retain demonstrations."""
    raw = json.loads(files("editagent.decompose").joinpath("prompts/ike-demonstrations.json").read_text("utf-8"))
    return tuple(Demonstration(**item) for item in raw["demonstrations"])


def _one_line(text: str) -> str:
    """Text from a user or the store, kept on one line and off the prompt's own markers."""
    return re.sub(r"\b(New fact|Question|Answer):", r"\1 -", quote_fact(text))


def _query(facts: Sequence[str], question: str) -> str:
    fact = " ".join(_one_line(f) for f in facts) if facts else "(none)"
    return f"New fact: {fact}\nQuestion: {_one_line(question)}\nAnswer:"


def encoder_of(source: EditView) -> Callable[[Sequence[str]], np.ndarray]:
    """The store's embedder, which IKE also uses to choose its demonstrations."""
    embedder = source.embedder
    return lambda texts: embedder.encode(list(texts))


class IKE:
    """In-context knowledge editing: ``IKE(llm, store.search_many, encode)``; ``encode`` embeds texts to unit vectors
    (the store's embedder) for choosing demonstrations by similarity to the question and its facts."""

    method = "ike"

    def __init__(self, llm: LLM, search_many: SearchMany, encode: Callable[[Sequence[str]], np.ndarray], *,
                 demonstrations: int = 8, facts: int = 3, min_score: float = 0.3) -> None:
        if demonstrations < 0 or facts < 1:
            raise EditError("demonstrations: must be >= 0, facts >= 1")
        self.llm, self.search_many, self.encode = llm, search_many, encode
        self.n_demonstrations, self.n_facts, self.min_score = demonstrations, facts, min_score
        self.pool = demonstration_pool()
        self._pool_vectors: np.ndarray | None = None

    def _choose(self, texts: Sequence[str]) -> list[list[Demonstration]]:
        """Per text, the most similar demonstrations, least similar first (the closest sits next to the query)."""
        if not self.n_demonstrations:
            return [[] for _ in texts]
        if self._pool_vectors is None:
            self._pool_vectors = self.encode([f"{d.fact} {d.question}" for d in self.pool])
        similarity = self.encode(list(texts)) @ self._pool_vectors.T
        chosen = []
        for row in similarity:
            best = np.argsort(-row, kind="stable")[: self.n_demonstrations]
            chosen.append([self.pool[int(i)] for i in best[::-1]])
        return chosen

    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]:
        started = time.perf_counter()
        namespaces = list(namespaces) if namespaces is not None else [DEFAULT_NAMESPACE] * len(questions)
        from editagent.memory.edit_memory import search_per_namespace  # noqa: PLC0415 - the store loads FAISS

        hits = [[hit for hit in row if hit.score >= self.min_score]
                for row in search_per_namespace(self.search_many, questions, namespaces, self.n_facts)]
        demos = self._choose([" ".join([*(h.memory for h in row), q]) for q, row in zip(questions, hits, strict=True)])
        prompts = ["".join(d.text() for d in row) + _query([h.memory for h in facts], q)
                   for q, facts, row in zip(questions, hits, demos, strict=True)]
        outputs = self.llm.generate(prompts, stop=list(STOP), max_new_tokens=MAX_NEW_TOKENS)
        seconds = (time.perf_counter() - started) / max(len(questions), 1)
        answers = []
        for question, namespace, facts, row, output in zip(questions, namespaces, hits, demos, outputs, strict=True):
            text = clean_answer(output)
            trace = [Hop(subquestion=question, retrieved_edit_id=h.id, retrieved_fact=h.memory,
                         retrieval_score=h.score, answer=text, source="edit") for h in facts]
            answers.append(Answer(question=question, text=text, trace=trace, method=self.method, namespace=namespace,
                                  raw=output, llm_calls=1, seconds=seconds, route="memory" if facts else "model",
                                  demonstrations=[d.text().strip() for d in row]))
        return answers


class SERAC:
    """Scope classifier + counterfactual model over the edit memory: ``SERAC(llm, detector)``."""

    method = "serac"

    def __init__(self, llm: LLM, detector: ScopeDetector, *, examples: int = 6) -> None:
        self.llm, self.detector = llm, detector
        pool = demonstration_pool()
        # a fixed, balanced prefix (so it is cached once): the first examples of each kind in turn
        by_kind = [[d for d in pool if d.kind == kind] for kind in KINDS]
        self.examples = [group[i] for i in range(len(pool)) for group in by_kind if i < len(group)][:examples]
        self.prefix = "".join(d.text() for d in self.examples)

    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]:
        started = time.perf_counter()
        namespaces = list(namespaces) if namespaces is not None else [DEFAULT_NAMESPACE] * len(questions)
        scoped = self.detector(list(questions), namespaces)
        inside = [i for i, hit in enumerate(scoped) if hit is not None]
        outside = [i for i, hit in enumerate(scoped) if hit is None]
        outputs: dict[int, str] = {}
        if inside:
            generated = self.llm.generate([self.prefix + _query([scoped[i].memory], questions[i]) for i in inside],
                                          stop=list(STOP), max_new_tokens=MAX_NEW_TOKENS, prefix=self.prefix)
            outputs.update(zip(inside, generated, strict=True))
        if outside:
            outputs.update((i, raw) for i, (_, raw) in zip(outside, answer_directly(self.llm, [questions[i] for i in
                                                                                               outside]), strict=True))
        seconds = (time.perf_counter() - started) / max(len(questions), 1)
        answers = []
        for i, (question, namespace) in enumerate(zip(questions, namespaces, strict=True)):
            hit, text = scoped[i], clean_answer(outputs[i])
            trace = [Hop(subquestion=question, answer=text, source="edit" if hit else "model",
                         retrieved_edit_id=hit.id if hit else None, retrieved_fact=hit.memory if hit else None,
                         retrieval_score=hit.score if hit else None)]
            answers.append(Answer(question=question, text=text, trace=trace, method=self.method, namespace=namespace,
                                  raw=outputs[i], llm_calls=1, seconds=seconds,
                                  route="memory" if hit else "model",
                                  demonstrations=[d.text().strip() for d in self.examples] if hit else []))
        return answers
