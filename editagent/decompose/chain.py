"""The editagent method: walk a question's relation chain through the edit store, the model filling gaps.

Where MeLLo and PokeMQA ask a small model to decompose, recall and judge, this loop uses the structure editagent
has:

1. **Link** (``editagent.linking``, no model): the stored entities the question names, however written (lower
   case, aliases, "British" for a stored United Kingdom), and, by cue phrases and word order
   (``parse_question``), the start entity and the chain of relations named after it.
2. **Walk**, each hop in tiers, each named in the trace (``Hop.tier``): *exact*, the store holds (entity,
   relation); *meaning*, the entity has edits and one of their relations is what the question asks, judged by the
   embedder against every relation the entity lacks (``RelationLinker``); *retrieval*, the hop's question searched
   in the namespace's edits, the best hit taken when the scope detector passes it and it names the same entity and
   relation; else the *model* answers the hop after MQuAKE's per-relation 8-shot prompt. When no cue names the next
   relation but the question says more ("Where does Alice's manager live?"), the walk goes on through the reached
   entity's edits if one of them, nested behind the hops so far, matches the question better than stopping does.
3. **Route**: a question no edit touched gets the plain model's own answer, from the prompt the no-edit baseline
   uses, so unrelated answers do not change. A question the rules cannot read goes through retrieval first.

A question answered by exact lookups alone loads no model and embeds nothing. All questions advance together,
one batched ``generate`` per relation per round.
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
from typing import Literal

import numpy as np

from editagent.decompose.direct import answer_directly, as_data, clean_answer
from editagent.decompose.hop_rules import EXTRA_HOPS, HOP_RULES, HopRule
from editagent.decompose.llm_decompose import LLMDecomposer
from editagent.decompose.question_parse import RelationMention, parse_question
from editagent.decompose.store_view import StoreView, ViewCache
from editagent.linking import RelationLinker, RelationScores
from editagent.llm.base import LLM
from editagent.names import named_in, names_match, normalise_name
from editagent.relations import fact_question, find_relation
from editagent.schema import DEFAULT_MAX_HOPS, DEFAULT_NAMESPACE, Answer, EditError, Hop, StoredEdit
from editagent.scope.base import ScopeModel
from editagent.scope.embedding import CALIBRATION
from editagent.view import EditView
from editagent.words import FUNCTION_WORDS

__all__ = ["ChainReasoner", "StoreView", "hop_prefix", "relation_prompts"]

HOP_STOP = ("\n", "Q:")
HOP_TOKENS = 16
# Shared by relations with no 8-shot prompt of their own (user-defined ones).
_GENERIC_SHOTS = ("P36", "P30", "P27", "P37", "P19", "P26", "P50", "P112")
RETRIEVAL_HITS = 3
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
# The rules of the walk by where they apply (``hop_rules``), each group in table order.
_UNCUED = tuple(rule for rule in HOP_RULES if rule.scope == "uncued")
_BY_RELATION = tuple(rule for rule in HOP_RULES if rule.scope == "relation")
_BY_CUE = tuple(rule for rule in HOP_RULES if rule.scope == "cue")

Tier = Literal["exact", "meaning", "retrieval", "model"]
Decomposer = Literal["rules", "llm", "auto"]


def check_decomposer(value: str) -> Decomposer:
    if value not in ("rules", "llm", "auto"):
        raise EditError(f"decomposer: {value!r} is not one of 'rules', 'llm', 'auto'")
    return value  # type: ignore[return-value]


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


@dataclass
class _Walk:
    question: str
    namespace: str
    entity: str = ""
    span: tuple[int, int] | None = None  # where the start entity is named (masked when judging by meaning)
    pending: list[RelationMention] = field(default_factory=list)
    uncovered: bool = False  # the question has words no cue and no entity explains
    hops: list[Hop] = field(default_factory=list)
    walked: list[str] = field(default_factory=list)  # the relations taken so far
    via_taken: set[int] = field(default_factory=set)
    llm_calls: int = 0
    failure: str | None = None
    settled: bool = False  # nothing more to take: the cues are used and the question says no more
    vectors: np.ndarray | None = None  # the question with its entity masked, and as asked (one embedding call)

    @property
    def active(self) -> bool:
        return self.failure is None and (bool(self.pending) or not self.settled)

    @property
    def used_edits(self) -> bool:
        return any(hop.source != "model" for hop in self.hops)


def _uncovered(question: str, covered: Sequence[tuple[int, int]]) -> bool:
    for match in _WORD.finditer(question):
        inside = any(start <= match.start() < end for start, end in covered)
        if not inside and match.group().casefold().split("'")[0] not in FUNCTION_WORDS:
            return True
    return False


class ChainReasoner:
    """Answer multi-hop questions by walking their relation chain through the edit store.

    >>> reasoner = ChainReasoner(llm, RecallableEdits(memory))
    >>> reasoner.answer("What is the capital of the country of citizenship of Doug TenNapel?").trace

    ``llm``: the model or a function giving it, called only when a hop needs it. ``linker``: judges relations by
    meaning; by default one over the memory's embedder, made when first needed. ``scope``: the scope detector that
    judges a search's hits in the retrieval tier (default: the calibrated embedding threshold on the hit's score).
    """

    def __init__(self, llm: LLM | Callable[[], LLM], memory: EditView, *, max_hops: int = DEFAULT_MAX_HOPS,
                 linker: RelationLinker | None = None, decomposer: Decomposer = "rules",
                 scope: ScopeModel | None = None) -> None:
        self._llm = llm
        self.memory = memory
        self.max_hops = max_hops
        self.decomposer = check_decomposer(decomposer)
        self.scope = scope
        self._linker = linker
        self._views = ViewCache(memory.edits, memory.version)

    @property
    def llm(self) -> LLM:
        if not isinstance(self._llm, LLM):
            self._llm = self._llm()
        return self._llm

    @property
    def linker(self) -> RelationLinker:
        if self._linker is None:
            self._linker = RelationLinker(self.memory.embedder)
        return self._linker

    def answer(self, question: str, namespace: str = DEFAULT_NAMESPACE) -> Answer:
        return self.answer_many([question], [namespace])[0]

    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]:
        started = time.perf_counter()
        namespaces = list(namespaces) if namespaces is not None else [DEFAULT_NAMESPACE] * len(questions)
        views = {ns: self._views.get(ns) for ns in dict.fromkeys(namespaces)}
        walks = [self._start(q, ns, views[ns]) for q, ns in zip(questions, namespaces, strict=True)]
        if self.decomposer == "llm":
            walks = [read or walk for walk, read in zip(walks, self._read_by_llm(walks, views), strict=True)]
        self._run(walks, views)
        if self.decomposer == "auto":  # the model reads only what the rules left to it
            left = [i for i, walk in enumerate(walks) if not (walk.failure is None and walk.used_edits)]
            reads = self._read_by_llm([walks[i] for i in left], views)
            self._run([read for read in reads if read is not None], views)
            for i, read in zip(left, reads, strict=True):
                if read is not None and read.failure is None and read.used_edits:
                    read.llm_calls += walks[i].llm_calls
                    walks[i] = read
                else:
                    walks[i].llm_calls += 1
        return self._finish(walks, time.perf_counter() - started)

    def _run(self, walks: list[_Walk], views: dict[str, StoreView]) -> None:
        for _ in range(2 * self.max_hops + EXTRA_HOPS + 1):
            active = [w for w in walks if w.active]
            if not active:
                break
            self._ask_model([w for w in active if not self._step(w, views[w.namespace])])
        for walk in walks:
            if walk.active:
                walk.failure = "too many hops"

    def _read_by_llm(self, walks: list[_Walk], views: dict[str, StoreView]) -> list[_Walk | None]:
        """Each question read by the model (``LLMDecomposer``) as a fresh walk, or None where it gave no valid
        chain. Its relation phrases become cues: a stored relation of that wording first, then a built-in one."""
        chains = LLMDecomposer(self.llm, max_hops=self.max_hops).decompose([w.question for w in walks])
        reads: list[_Walk | None] = []
        for walk, chain in zip(walks, chains, strict=True):
            if chain is None:
                reads.append(None)
                continue
            view = views[walk.namespace]
            linked = view.linker.mentions(chain.entity)
            entity = linked[0].name if len(linked) == 1 and linked[0].text == chain.entity else chain.entity
            cues = [RelationMention(-1, -1, _phrase_relations(phrase, view)) for phrase in chain.relations]
            reads.append(_Walk(walk.question, walk.namespace, entity, chain.span, cues, llm_calls=1))
        return reads

    # -- reading the question ----------------------------------------------------------------------------

    def _start(self, question: str, namespace: str, view: StoreView) -> _Walk:
        mentions = view.linker.mentions(question)
        stored = [m for m in mentions if m.stored]
        known = [m.text for m in (stored or mentions)]  # a place the store lacks names only a model hop's start
        parsed = parse_question(question, known_entities=known, extra_relations=view.relations)
        walk = _Walk(question, namespace, parsed.entity or "", parsed.span, list(parsed.chain))
        if parsed.span is not None:
            linked = next((m for m in mentions if m.start <= parsed.span[0] and parsed.span[1] <= m.end), None)
            if linked is not None:
                walk.entity, walk.span = linked.name, (linked.start, linked.end)
        if len(walk.pending) > self.max_hops:
            walk.failure = "too many hops"
        covered = [m_span for m_span in ((m.start, m.end) for m in parsed.chain)]
        walk.uncovered = _uncovered(question, [*covered, *([walk.span] if walk.span else [])])
        return walk

    # -- one hop ---------------------------------------------------------------------------------------------

    def _step(self, walk: _Walk, view: StoreView) -> bool:
        """Take the next hop by the first rule of ``HOP_RULES`` that takes one; False when the model must answer it
        (a cued hop no rule takes)."""
        if not walk.pending:
            return any(getattr(self, rule.step)(rule, walk, view) for rule in _UNCUED)
        for relation in walk.pending[0].relations:
            if any(getattr(self, rule.step)(rule, walk, view, relation) for rule in _BY_RELATION):
                return True
        return any(getattr(self, rule.step)(rule, walk, view) for rule in _BY_CUE)

    # The rules' steps (``hop_rules.HOP_RULES`` says when each is tried): True when the step took the walk on.

    def _officeholder_hop(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        held, relation = view.held(walk.entity) if walk.entity else {}, rule.relation
        if walk.hops or walk.uncovered or relation is None or relation not in held:
            return False
        self._take_edit(walk, held[relation], relation, "exact")
        return True

    def _settle(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        if len(walk.walked) < self.max_hops and walk.uncovered:
            return False
        walk.settled = True
        return True

    def _extend(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        held = view.held(walk.entity) if walk.entity else {}
        relation = self._link(walk, view, held, margin=rule.margin) if held else None
        if relation is None:
            walk.settled = True
        else:
            self._take_edit(walk, held[relation], relation, "meaning")
        return True

    def _through_hop(self, rule: HopRule, walk: _Walk, view: StoreView, relation: str) -> bool:
        mention = walk.pending[0]
        if relation != rule.relation or id(mention) in walk.via_taken:
            return False
        for via in rule.via:
            stored = view.find(walk.entity, via)
            if stored is not None:
                walk.via_taken.add(id(mention))
                self._take_edit(walk, stored, via, "exact")
                return True
        return False

    def _exact_hop(self, rule: HopRule, walk: _Walk, view: StoreView, relation: str) -> bool:
        stored = view.find(walk.entity, relation)
        if stored is None:
            return False
        walk.pending.pop(0)
        self._take_edit(walk, stored, relation, "exact")
        return True

    def _bridge_hop(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        held = view.held(walk.entity)
        bridge = self._bridge(walk, view, held, walk.pending[0].relations, rule.margin) if held else None
        if bridge is None:
            return False
        self._take_edit(walk, held[bridge], bridge, "meaning")
        return True

    def _meaning_hop(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        mention = walk.pending[0]
        held = view.held(walk.entity)
        relation = self._link(walk, view, held, cue=mention.relations) if held else None
        if relation is None:
            return False
        # The cue names the relation, or means it and is the question's last but one: it and every later cue
        # naming the relation are one hop ("known for" beside "genre" in "What genre of music is X known
        # for?"). A cue that only means it, with more hops to come, stays for one of them when a later cue
        # names the relation: the words came in another order than the chain.
        later = next((m for m in walk.pending[1:] if relation in m.relations), None)
        if relation in mention.relations or later is None or len(walk.pending) <= 2:
            walk.pending = [m for m in walk.pending if m is not mention and relation not in m.relations]
        else:
            walk.pending.remove(later)
        self._take_edit(walk, held[relation], relation, "meaning")
        return True

    def _answered_hop(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        if not (walk.used_edits and walk.hops[-1].source != "model" and
                self._answered(walk, walk.pending[0].relations)):
            return False
        walk.pending.clear()
        walk.settled = True
        return True

    def _retrieval_hop(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        mention = walk.pending[0]
        subject = self._retrieve(walk, walk.question if not walk.hops else fact_question(walk.entity,
                                                                                       mention.relations[0]))
        if subject is None:
            return False
        found = next((view.find(subject, r) for r in mention.relations if view.find(subject, r)), None)
        held = view.held(subject)
        relation = found.relation if found else self._link(walk, view, held, cue=mention.relations)
        if relation is None:
            return False
        walk.pending.pop(0)
        self._take_edit(walk, found or held[relation], relation, "retrieval")
        return True

    def _first_uncued_hop(self, rule: HopRule, walk: _Walk, view: StoreView) -> bool:
        if walk.hops:
            return False
        held = view.held(walk.entity) if walk.entity else {}
        relation = self._link(walk, view, held) if held else None
        if relation is not None:
            self._take_edit(walk, held[relation], relation, "meaning")
            return True
        subject = self._retrieve(walk, walk.question)
        relation = self._link(walk, view, view.held(subject)) if subject is not None else None
        if subject is not None and relation is not None:
            self._take_edit(walk, view.held(subject)[relation], relation, "retrieval")
            return True
        walk.failure = "no edit applies" if held or walk.entity else "unparsed"
        return True

    def _bridge(self, walk: _Walk, view: StoreView, held: dict[str, StoredEdit], cue: Sequence[str],
                margin: float) -> str | None:
        """An edit of the entity whose object holds the cued relation, when the question reads better as that edit
        and then the cued relation than as the cued relation of the entity itself."""
        bridges = [r for r in held if r not in cue and any(view.find(held[r].object, c) for c in cue)]
        if not bridges:
            return None
        vector = self._vector(walk)
        direct = self.linker.score(vector, walk.walked, cue).best(cue)[1]
        through = {r: self.linker.score(vector, [*walk.walked, r], cue).best(cue)[1] for r in bridges}
        best = max(through, key=lambda r: through[r])
        return best if through[best] >= direct + margin else None

    def _answered(self, walk: _Walk, cue: Sequence[str]) -> bool:
        """Whether the hops so far already read as the whole question, better than going on to the cued relation
        (which the store cannot give here, so the model would have to)."""
        vector, walked = self._vector(walk), walk.walked
        stop = self.linker.score(vector, walked[:-1], walked[-1:]).scores[walked[-1]]
        onward = self.linker.score(vector, walked, cue).best(cue)[1]
        return stop >= onward

    def _vector(self, walk: _Walk) -> np.ndarray:
        """The question with its entity replaced by "X", as relations are judged against it."""
        if walk.vectors is None:
            walk.vectors = self.linker.encode_question(walk.question, walk.span)
        return walk.vectors[0]

    def _plain_vector(self, walk: _Walk) -> np.ndarray:
        """The question as it was asked, as it is searched."""
        self._vector(walk)
        assert walk.vectors is not None
        return walk.vectors[1]

    def _link(self, walk: _Walk, view: StoreView, held: dict[str, StoredEdit], *, cue: Sequence[str] = (),
              margin: float | None = None) -> str | None:
        """The relation among the entity's edits (``held``) that the question asks for next, by meaning; None when
        it asks for a relation the entity has no edit on (or, given a ``margin``, when going on explains the question
        by less than that margin better than stopping)."""
        linker, vector = self.linker, self._vector(walk)
        own = [r for r in held if r not in walk.walked]
        alternatives = [*linker.alternatives(view.relations, held), *(c for c in cue if c not in held)]
        scores = linker.score(vector, walk.walked, [*own, *alternatives])
        # Two steps ahead through the store: "Where does Alice's manager live?" asks for the home city of the
        # manager, which "manager" alone scores below the built-in "residence".
        ahead = {}
        if walk.uncovered and len(walk.walked) + 2 <= self.max_hops and not cue:
            for relation in own:
                onward = [r for r in view.held(held[relation].object) if r != relation]
                if onward:
                    _, ahead[relation] = linker.score(vector, [*walk.walked, relation], onward).best(onward)
        best = {r: max(scores.scores[r], ahead.get(r, float("-inf"))) for r in own}
        chosen = linker.choose(RelationScores({**scores.scores, **best}), own, alternatives)
        if chosen is None or margin is None:
            return chosen
        stop = linker.score(vector, walk.walked[:-1], walk.walked[-1:]).scores[walk.walked[-1]]
        return chosen if best[chosen] >= stop + margin else None

    def _retrieve(self, walk: _Walk, query: str) -> str | None:
        """The stored subject a search for ``query`` finds, when the scope detector passes the hit and the walk's
        entity (or, on the first hop, the question) names it, however spelt: a name no exact link matched."""
        # The whole question's vector comes with the one the meaning tier uses, in one call.
        vectors = self._plain_vector(walk)[None, :] if query == walk.question else \
            self.linker.embedder.encode([query])
        hits = self.memory.search_many([query], namespace=walk.namespace, limit=RETRIEVAL_HITS, vectors=vectors)[0]
        if self.scope is not None:  # e.g. the trained detector: it judges the candidates, at most one passes
            verdict = self.scope.judge([query], [hit.memory for hit in hits])[0] if hits else None
            hits = [hits[verdict.index]] if verdict is not None and verdict.index is not None else []
        for hit in hits:
            if self.scope is None and hit.score < CALIBRATION.threshold:
                break
            names = (hit.edit.subject, *hit.edit.aliases)
            if walk.entity and any(names_match(walk.entity, name) for name in names):
                return hit.edit.subject
            # the question's own entity, spelt unlike any stored name; not a stored name inside a longer one the
            # question uses ("Germany" in "West Germany" names another entity)
            inside = walk.entity and set(normalise_name(hit.edit.subject).split()) < set(
                normalise_name(walk.entity).split())
            if not walk.hops and not inside and named_in(walk.question, (hit.edit.subject, *hit.edit.aliases)):
                return hit.edit.subject
        return None

    def _take_edit(self, walk: _Walk, edit: StoredEdit, relation: str, tier: Tier) -> None:
        follows_edit = bool(walk.hops) and walk.hops[-1].source != "model"
        walk.hops.append(Hop(subquestion=fact_question(walk.entity or edit.subject, relation),
                             retrieved_edit_id=edit.id, retrieved_fact=edit.sentence, answer=edit.object,
                             source="graph" if follows_edit else "edit", tier=tier, relation=relation))
        walk.entity = edit.object
        walk.walked.append(relation)

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
                                     source="model", tier="model", relation=relation))
                walk.walked.append(relation)
                if not answer:
                    walk.failure = "model gave no answer"
                walk.entity = answer

    # -- answers ---------------------------------------------------------------------------------------------

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
                                       trace=[Hop(subquestion=walk.question, answer=text, source="model", tier="model",
                                                  draft_answer=f"plain model ({why})")])
        per_question = seconds / max(len(walks), 1)
        result = [answers[id(w)] for w in walks]
        for answer in result:
            answer.seconds = per_question
        return result


def _phrase_relations(phrase: str, view: StoreView) -> tuple[str, ...]:
    """The relations a model's phrase may name: the namespace's relation of that wording, the built-in one it is an
    alias of, and the phrase itself (a relation the store may hold under that label)."""
    key = normalise_name(phrase)
    own = [relation for relation in view.relations if normalise_name(relation) == key]
    known = find_relation(phrase)
    return tuple(dict.fromkeys([*own, *([known.label] if known else []), " ".join(phrase.split())]))
