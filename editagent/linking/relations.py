"""Which relation a question asks for, by meaning: the question (its entity replaced by "X") against ways of asking
for each relation (``relation_descriptions``), nested behind the relations already walked ("Where does the
manager of X live?" for the home city of X's manager).

A stored relation is taken only if it is about as close to the question as every relation the store does not hold
for that entity (the built-in table, which also lists common questions no edit may cover, such as age or height,
and the namespace's other relations). So "How old is Messi?" does not read Messi's edited club, while "Which side
does Messi play for?" does. The thresholds are in ``LinkRule``; docs/decisions.md has how they were chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from editagent.relations import fact_phrase, find_relation, known_relations, relation_descriptions
from editagent.view import Encoder
from editagent.words import GENERAL_RELATION_WORDS

MASK = "X"
_MAX_INNER = 6  # noun phrases of a walk tried when nesting (its relations' wordings multiply)
# Relations whose templates match nearly any question ("Who is the X?"), useless as an alternative.
_NOT_ALTERNATIVES = frozenset({"officeholder"})


@dataclass(frozen=True)
class LinkRule:
    """When a stored relation is what a question asks: its score at least ``floor``, and no more than ``margin``
    below the best relation the store does not hold for the entity."""

    floor: float = 0.5
    margin: float = 0.1


@dataclass(frozen=True)
class RelationScores:
    """Scores of candidate relations for one question at one point of its chain (cosines of the best wording)."""

    scores: dict[str, float]

    def best(self, labels: Iterable[str]) -> tuple[str | None, float]:
        ranked = [(self.scores[label], label) for label in labels if label in self.scores]
        if not ranked:
            return None, float("-inf")
        score, label = max(ranked)
        return label, score


def _distinctive_words(label: str) -> set[str]:
    """The words of the relation's label and aliases, minus general ones."""
    found = find_relation(label)
    texts = [label, *(found.aliases if found else ())]
    return {word for text in texts for word in text.casefold().split()
            if word not in GENERAL_RELATION_WORDS and len(word) > 2}


def chain_descriptions(walked: Sequence[str], relation: str) -> list[str]:
    """Ways of asking for ``relation`` of the entity reached through ``walked`` from "X": each of its wordings with
    "X" replaced by a noun phrase of the walk ("the chancellor of X" as well as "the head of government of X")."""
    texts = relation_descriptions(relation)
    if not walked:
        return texts
    inners = [MASK]
    for step in walked:
        nouns = [text for text in relation_descriptions(step) if text.startswith("the ")] or [fact_phrase(step, MASK)]
        inners = [_nest(noun, inner) for inner in inners for noun in nouns][:_MAX_INNER]
    return list(dict.fromkeys(_nest(text, inner) for inner in inners for text in texts))


def _nest(text: str, inner: str) -> str:
    words = text.split(" ")
    return " ".join(inner if word == MASK else inner + word[1:] if word[:1] == MASK and not word[1:2].isalpha()
                    else word for word in words)


class RelationLinker:
    """Scores relations for questions by meaning; keeps every wording's vector, so a relation costs one embedding
    the first time it is scored and none after."""

    def __init__(self, embedder: Encoder, rule: LinkRule | None = None) -> None:
        self.embedder = embedder
        self.rule = rule or LinkRule()
        self._vectors: dict[str, np.ndarray] = {}

    def encode_question(self, question: str, mention: tuple[int, int] | None) -> np.ndarray:
        """Two vectors in one call: the question with the entity at ``mention`` (start, end) replaced by "X", and
        the question as it is (what a search of the edits uses)."""
        masked = question if mention is None else question[: mention[0]] + MASK + question[mention[1]:]
        return self.embedder.encode([masked, question])

    def score(self, question: np.ndarray, walked: Sequence[str], relations: Iterable[str]) -> RelationScores:
        """Each relation's best cosine with the question, as the next step after ``walked``."""
        wordings = {relation: chain_descriptions(walked, relation) for relation in dict.fromkeys(relations)}
        missing = list(dict.fromkeys(text for texts in wordings.values() for text in texts
                                     if text not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.embedder.encode(missing), strict=True):
                self._vectors[text] = vector
        return RelationScores({relation: float(max(self._vectors[text] @ question for text in texts))
                               for relation, texts in wordings.items()})

    def alternatives(self, stored: Iterable[str], held: Iterable[str]) -> list[str]:
        """Relations a question could ask for that the entity has no edit on: the built-in ones and the
        namespace's (``stored``), minus the entity's own (``held``) and any that shares a distinctive word with one
        of them (a stored "home city" is what "Where does X live?" asks, not the built-in "residence", whose
        wordings include "home")."""
        own = set(held)
        own_words = set().union(*(_distinctive_words(label) for label in own)) if own else set()
        every = [relation.label for relation in known_relations()] + list(stored)
        return [label for label in dict.fromkeys(every) if label not in own and label not in _NOT_ALTERNATIVES
                and not (own_words & _distinctive_words(label))]

    def choose(self, scores: RelationScores, held: Iterable[str], alternatives: Iterable[str]) -> str | None:
        """The held relation the question asks for, or None when it asks for something the store lacks."""
        label, score = scores.best(held)
        _, rival = scores.best(alternatives)
        if label is None or score < self.rule.floor or score < rival - self.rule.margin:
            return None
        return label
