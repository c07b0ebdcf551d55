"""The editagent method: walk a question's relation chain through the edit store, the model filling gaps.

Where MeLLo and PokeMQA ask a small model to decompose, recall and judge, this loop uses
the structure editagent has:

1. ``parse_question`` reads the start entity and the chain of relations from the question.
2. Each hop is first looked up *exactly* in the store, as (entity, relation); a hop that
   continues from an edited hop follows the edit graph. Only a hop no edit covers goes to
   the model, as one single-hop question after MQuAKE's per-relation 8-shot prompt.
3. Routing: if no hop touched an edit, the question is out of scope and gets the plain
   model's own answer (the same prompt as the no-edit baseline), so unrelated answers do
   not change. A question the parser cannot read goes the same way.

Every hop in the trace names its source: ``edit`` (store lookup), ``graph`` (followed from
the previous edited hop) or ``model``. All questions advance together, one batched
``generate`` per relation per round.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Protocol

from editagent.decompose.direct import answer_directly, as_data, clean_answer
from editagent.decompose.question_parse import RelationMention, parse_question
from editagent.graph import entity_key
from editagent.llm.base import LLM
from editagent.policy import in_memory
from editagent.relations import fact_question, find_relation
from editagent.schema import DEFAULT_NAMESPACE, Answer, Hop, StoredEdit

HOP_STOP = ("\n", "Q:")
HOP_TOKENS = 16
# Wikidata reaches some relations through another: an athlete's sport through the position they play.
# The intermediate hop is taken only when the store holds it.
VIA: dict[str, tuple[str, ...]] = {"sport": ("position played on team / speciality",)}
# Shared by relations with no 8-shot prompt of their own (user-defined ones).
_GENERIC_SHOTS = ("P36", "P30", "P27", "P37", "P19", "P26", "P50", "P112")


class EditSource(Protocol):
    """What the loop needs of the memory: a namespace's live edits."""

    def edits(self, namespace: str | None = ..., *, include_history: bool = ...) -> list[StoredEdit]: ...


@cache
def relation_prompts() -> dict[str, str]:
    """MQuAKE's 8-shot single-hop prompts, by Wikidata relation id (MIT; see prompts/NOTICE.md)."""
    text = files("editagent.decompose").joinpath("prompts/relation-prompts.json").read_text(encoding="utf-8")
    return json.loads(text)


def hop_prefix(relation: str) -> str:
    """The few-shot prefix for asking the model one hop of ``relation``."""
    prompts = relation_prompts()
    found = find_relation(relation)
    if found and found.wikidata_id in prompts:
        return prompts[found.wikidata_id].rstrip() + "\n"
    return "\n".join(prompts[p].splitlines()[0] for p in _GENERIC_SHOTS) + "\n"


def match_key(name: str) -> str:
    """``graph.entity_key`` made looser for matching a model's wording: punctuation and a leading "the" dropped
    ("J.K. Rowling" / "J. K. Rowling", "The Beatles" / "Beatles")."""
    key = entity_key(re.sub(r"[^\w\s]", " ", name))
    return key[4:] if key.startswith("the ") else ("" if key == "the" else key)


def same_entity(a: str, b: str) -> bool:
    """Whether two names plausibly denote one entity: equal keys, or one a whole-word part of the other
    ("United States" / "United States of America"), the part at least two words (one word alone is too
    weak a clue: "Paris" / "Paris Hilton")."""
    ka, kb = match_key(a), match_key(b)
    if not ka or not kb:
        return False
    if ka == kb:
        return True
    short, long = sorted((ka, kb), key=len)
    return " " in short and re.search(rf"(?<!\w){re.escape(short)}(?!\w)", long) is not None


@dataclass
class StoreView:
    """A namespace's live edits indexed for exact (entity, relation) lookups, built once per batch."""

    by_key: dict[tuple[str, str], StoredEdit]
    by_relation: dict[str, list[StoredEdit]]
    subjects: list[str]

    @classmethod
    def build(cls, stored: Sequence[StoredEdit]) -> StoreView:
        by_key: dict[tuple[str, str], StoredEdit] = {}
        by_relation: dict[str, list[StoredEdit]] = defaultdict(list)
        for item in stored:  # creation order: a later edit of the same key wins
            if not in_memory(item.edit):  # in the weights only: the model answers it
                continue
            by_key[(match_key(item.edit.subject), item.edit.relation)] = item
            by_relation[item.edit.relation].append(item)
        return cls(by_key, dict(by_relation), list(dict.fromkeys(s.edit.subject for s in by_key.values())))

    def find(self, entity: str, relation: str) -> StoredEdit | None:
        exact = self.by_key.get((match_key(entity), relation))
        if exact is not None:
            return exact
        matches = [s for s in self.by_relation.get(relation, []) if same_entity(entity, s.edit.subject)]
        return matches[-1] if matches else None

    @property
    def relations(self) -> list[str]:
        return list(self.by_relation)


@dataclass
class _Walk:
    question: str
    namespace: str
    entity: str = ""
    pending: list[RelationMention] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    via_taken: set[int] = field(default_factory=set)
    llm_calls: int = 0
    failure: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.pending) and self.failure is None

    @property
    def used_edits(self) -> bool:
        return any(hop.source != "model" for hop in self.hops)


class ChainReasoner:
    """Answer multi-hop questions by walking their relation chain through the edit store.

    >>> reasoner = ChainReasoner(llm, memory)
    >>> reasoner.answer("What is the capital of the country of citizenship of Doug TenNapel?").trace
    """

    def __init__(self, llm: LLM | Callable[[], LLM], memory: EditSource, *, max_hops: int = 5) -> None:
        self._llm = llm  # or a function giving it, called only when a hop needs the model
        self.memory = memory
        self.max_hops = max_hops

    @property
    def llm(self) -> LLM:
        if not isinstance(self._llm, LLM):
            self._llm = self._llm()
        return self._llm

    def answer(self, question: str, namespace: str = DEFAULT_NAMESPACE) -> Answer:
        return self.answer_many([question], [namespace])[0]

    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]:
        started = time.perf_counter()
        namespaces = list(namespaces) if namespaces is not None else [DEFAULT_NAMESPACE] * len(questions)
        views = {ns: StoreView.build(self.memory.edits(ns)) for ns in dict.fromkeys(namespaces)}
        walks = []
        for question, namespace in zip(questions, namespaces, strict=True):
            view = views[namespace]
            parsed = parse_question(question, known_entities=view.subjects, extra_relations=view.relations)
            walk = _Walk(question, namespace, parsed.entity or "", list(parsed.chain))
            if not parsed.ok:
                walk.failure = "unparsed"
            walks.append(walk)
        for _ in range(self.max_hops + len(VIA)):
            active = [w for w in walks if w.active]
            if not active:
                break
            asking = [w for w in active if not self._step_from_store(w, views[w.namespace])]
            self._ask_model(asking)
        for walk in walks:
            if walk.active:
                walk.failure = "too many hops"
        return self._finish(walks, time.perf_counter() - started)

    def _step_from_store(self, walk: _Walk, view: StoreView) -> bool:
        """Take the next hop from an edit if one covers it; False when the model must answer it."""
        mention = walk.pending[0]
        for relation in mention.relations:
            if id(mention) not in walk.via_taken:
                for via in VIA.get(relation, ()):
                    stored = view.find(walk.entity, via)
                    if stored is not None:
                        walk.via_taken.add(id(mention))
                        self._take_edit(walk, stored, via)
                        return True
            stored = view.find(walk.entity, relation)
            if stored is not None:
                walk.pending.pop(0)
                self._take_edit(walk, stored, relation)
                return True
        return False

    def _take_edit(self, walk: _Walk, stored: StoredEdit, relation: str) -> None:
        edit = stored.edit
        follows_edit = bool(walk.hops) and walk.hops[-1].source != "model"
        walk.hops.append(Hop(subquestion=fact_question(walk.entity, relation), retrieved_edit_id=edit.id,
                             retrieved_fact=edit.sentence, answer=edit.object,
                             source="graph" if follows_edit else "edit"))
        walk.entity = edit.object

    def _ask_model(self, walks: list[_Walk]) -> None:
        by_relation: dict[str, list[_Walk]] = defaultdict(list)
        for walk in walks:
            by_relation[walk.pending[0].relations[0]].append(walk)
        for relation, group in by_relation.items():
            prefix = hop_prefix(relation)
            subquestions = [fact_question(as_data(w.entity), relation) for w in group]
            outputs = self.llm.generate([f"{prefix}Q: {q} A:" for q in subquestions], stop=list(HOP_STOP),
                                        max_new_tokens=HOP_TOKENS, prefix=prefix)
            for walk, subquestion, output in zip(group, subquestions, outputs, strict=True):
                walk.llm_calls += 1
                walk.pending.pop(0)
                answer = clean_answer(output)
                walk.hops.append(Hop(subquestion=subquestion, draft_answer=output.strip(), answer=answer,
                                     source="model"))
                if not answer:
                    walk.failure = "model gave no answer"
                walk.entity = answer

    def _finish(self, walks: list[_Walk], seconds: float) -> list[Answer]:
        in_scope = [w for w in walks if w.failure is None and w.used_edits]
        plain = [w for w in walks if not (w.failure is None and w.used_edits)]
        # Guarded: touching self.llm loads the model, which an all-edits batch never needs.
        direct = answer_directly(self.llm, [w.question for w in plain]) if plain else []
        answers: dict[int, Answer] = {}
        for walk in in_scope:
            answers[id(walk)] = Answer(question=walk.question, text=walk.entity, trace=walk.hops, method="agent",
                                       namespace=walk.namespace, llm_calls=walk.llm_calls, route="memory")
        for walk, (text, raw) in zip(plain, direct, strict=True):
            why = walk.failure or "no edit applies"
            answers[id(walk)] = Answer(question=walk.question, text=text, method="agent", namespace=walk.namespace,
                                       raw=raw, llm_calls=walk.llm_calls + 1, route="model",
                                       trace=[Hop(subquestion=walk.question, answer=text, source="model",
                                                  draft_answer=f"plain model ({why})")])
        per_question = seconds / max(len(walks), 1)
        result = [answers[id(w)] for w in walks]
        for answer in result:
            answer.seconds = per_question
        return result
