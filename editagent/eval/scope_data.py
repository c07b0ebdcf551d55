"""PokeMQA's scope-detector data (``cls-filtered.json``), and an 80/20 split by edit.

The file is a list of ``{"edit": sentence, "questions": [4 in-scope questions]}``; 815 sentences
occur more than once (with other wordings of the questions), so entries are merged by sentence.
The paper's script splits entries, not edits, so duplicates of one edit land on both sides; here
the split is by *edit group*: edits that share a question, or the same (subject, relation) with
another object, are in scope of each other's questions and always go to the same side.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from editagent.eval.data import SCOPE_PAIRS, data_file
from editagent.relations import mquake_relations

# MQuAKE's own spellings of two cloze templates, which editagent's relation table corrects.
_MQUAKE_TEMPLATES = ("The univeristy where {s} was educated is {o}", "The origianl broadcaster of {s} is {o}")


@dataclass(frozen=True)
class ScopeEdit:
    """One edit sentence with every question in its scope; subject and relation template when parsed."""

    sentence: str
    questions: tuple[str, ...]
    subject: str | None = None
    relation: str | None = None

    @property
    def key(self) -> tuple[str, str] | None:
        return (self.subject.casefold(), self.relation) if self.subject and self.relation else None


@dataclass(frozen=True)
class Split:
    train: list[ScopeEdit]
    test: list[ScopeEdit]


def resolve_data_path(data: str | Path | None = None) -> Path:
    """``data``: a folder holding ``pokemqa/cls-filtered.json``, or the file itself; None: ``data_file`` finds it."""
    if data is None:
        return data_file(SCOPE_PAIRS)
    path = Path(data)
    if path.is_dir():
        path = path / SCOPE_PAIRS
    if not path.is_file():
        raise FileNotFoundError(f"data: {path} not found; pass the MQuAKE data folder or set EDITAGENT_DATA")
    return path


@cache
def _templates() -> tuple[tuple[str, re.Pattern[str]], ...]:
    texts = {relation.sentence.rstrip(".") for relation in mquake_relations()} | set(_MQUAKE_TEMPLATES)
    # Most specific first: "{s} is located in the continent of {o}" before "{s} is located in {o}".
    ordered = sorted(texts, key=lambda t: -len(t.replace("{s}", "").replace("{o}", "")))
    return tuple((text, re.compile("^" + re.escape(text).replace(r"\{s\}", "(?P<s>.+?)")
                                   .replace(r"\{o\}", "(?P<o>.+)") + "$")) for text in ordered)


def parse_edit(sentence: str) -> tuple[str, str] | None:
    """(subject, relation template) of an MQuAKE cloze sentence, or None if no template fits."""
    text = sentence.strip().rstrip(".")
    for template, pattern in _templates():
        match = pattern.match(text)
        if match:
            return match["s"], template
    return None


def load_scope_edits(data: str | Path | None = None) -> list[ScopeEdit]:
    """The file's entries merged by sentence (questions de-duplicated, first-seen order)."""
    rows = json.loads(resolve_data_path(data).read_text(encoding="utf-8"))
    merged: dict[str, dict[str, None]] = {}
    for row in rows:
        merged.setdefault(row["edit"].strip(), {}).update(dict.fromkeys(q.strip() for q in row["questions"]))
    edits = []
    for sentence, questions in merged.items():
        parsed = parse_edit(sentence)
        edits.append(ScopeEdit(sentence, tuple(questions), *(parsed or (None, None))))
    return edits


def edit_groups(edits: Sequence[ScopeEdit]) -> list[int]:
    """Group id per edit: union of edits sharing a question or a (subject, relation) key."""
    parent = list(range(len(edits)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[object, int] = {}
    for i, edit in enumerate(edits):
        for token in (*(("q", q) for q in edit.questions), ("k", edit.key) if edit.key else None):
            if token is None:
                continue
            j = first.setdefault(token, i)
            parent[root(i)] = root(j)
    return [root(i) for i in range(len(edits))]


def split_by_edit(edits: Sequence[ScopeEdit], test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Whole edit groups to each side, shuffled with ``seed``, until the test side holds ``test_fraction``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: {test_fraction}; use a number between 0 and 1")
    groups: dict[int, list[int]] = {}
    for i, group in enumerate(edit_groups(edits)):
        groups.setdefault(group, []).append(i)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    target, test = round(test_fraction * len(edits)), set()
    for group in order:
        if len(test) >= target:
            break
        test.update(groups[group])
    return Split(train=[e for i, e in enumerate(edits) if i not in test],
                 test=[e for i, e in enumerate(edits) if i in test])


def in_scope_sets(edits: Sequence[ScopeEdit]) -> tuple[list[str], list[frozenset[int]], list[int]]:
    """Every (question, edit) of ``edits`` as parallel lists: question, the indices of all edits in its
    scope (its own, any other listing the same question, any other on the same subject and relation),
    and the index of the edit it came from."""
    by_question: dict[str, set[int]] = {}
    by_key: dict[tuple[str, str], set[int]] = {}
    for i, edit in enumerate(edits):
        for question in edit.questions:
            by_question.setdefault(question, set()).add(i)
        if edit.key:
            by_key.setdefault(edit.key, set()).add(i)
    questions, gold, owners = [], [], []
    for i, edit in enumerate(edits):
        same_key = by_key.get(edit.key, set()) if edit.key else set()
        for question in edit.questions:
            questions.append(question)
            gold.append(frozenset(by_question[question] | same_key | {i}))
            owners.append(i)
    return questions, gold, owners
