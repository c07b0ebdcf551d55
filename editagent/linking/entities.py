"""Which stored entities a question names, however the user writes them: no model, no embedding.

A name matches whole words of the question after both are normalised the same way (``normalise_name``): case,
accents, punctuation and abbreviation dots do not count ("acme corp" = "Acme Corp.", "U.K." = "UK", "Malmo" =
"Malmö"), a possessive is its own word ("Alice's" names "Alice"), and a leading "the" is optional. Besides each
stored subject, its aliases (``Edit.aliases``) and, from the places table, the other names and the demonyms of a
place ("British", "the UK" for a stored "United Kingdom") link to it. Places with no edit link to their own name,
so a model hop can start from "the French president". Short all-capital abbreviations ("US", "LA") match only
in capitals, so the words "us" and "la" do not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from editagent.linking.places import places
from editagent.names import name_tokens, normalise_name

_ABBREVIATION = re.compile(r"[A-Z]{2,4}")
Link = Literal["subject", "alias", "place"]


@cache
def _place_surfaces() -> tuple[tuple[str, tuple[str, ...], tuple[tuple[tuple[str, ...], str | None], ...]], ...]:
    """Per place: its name, its normalised names, and each surface form (names and demonyms) as a word tuple with the
    capitals an abbreviation must be written in; normalised once per process, since linkers are rebuilt after every
    write."""
    return tuple((place.name, tuple(normalise_name(n) for n in place.names),
                  tuple((key, surface if _ABBREVIATION.fullmatch(surface) else None)
                        for surface in (*place.names, *place.demonyms)
                        if (key := tuple(normalise_name(surface).split()))))
                 for place in places())


@dataclass(frozen=True)
class EntityMention:
    """A span of the question (``start``:``end``, as written in ``text``) that names ``name``: a stored subject, or a
    place by its canonical name. ``how``: by the subject's own name, one of its aliases, or the places table."""

    start: int
    end: int
    text: str
    name: str
    how: Link
    stored: bool


@dataclass(frozen=True)
class _Entry:
    name: str
    how: Link
    stored: bool
    exact_case: str | None  # the capitals an abbreviation must be written in


class EntityLinker:
    """Finds stored subjects (and places) in questions. Build one per namespace's live edits (``build``)."""

    def __init__(self, entries: dict[tuple[str, ...], _Entry]) -> None:
        self._entries = entries
        self._by_first: dict[str, list[tuple[str, ...]]] = {}
        for key in sorted(entries, key=len, reverse=True):  # longest first
            self._by_first.setdefault(key[0], []).append(key)

    @classmethod
    def build(cls, subjects: Iterable[tuple[str, Sequence[str]]]) -> EntityLinker:
        """``subjects``: (stored subject, its aliases). Places that a stored subject names link to that subject."""
        entries: dict[tuple[str, ...], _Entry] = {}

        def add(surface: str, entry: _Entry, *, overwrite: bool) -> None:
            key = tuple(normalise_name(surface).split())
            if key and (overwrite or key not in entries):
                exact = surface if _ABBREVIATION.fullmatch(surface) else None
                entries[key] = _Entry(entry.name, entry.how, entry.stored, exact)

        stored: dict[str, str] = {}
        for subject, aliases in subjects:
            stored.setdefault(normalise_name(subject), subject)
            for alias in aliases:
                stored.setdefault(normalise_name(alias), subject)
        for name, names, surfaces in _place_surfaces():
            target = next((stored[n] for n in names if n in stored), None)
            for key, exact in surfaces:
                entries.setdefault(key, _Entry(target or name, "place", target is not None, exact))
        # Stored names come last and win: a user's own "Georgia" is theirs, whatever the places table says.
        for subject, aliases in subjects:
            for surface, how in ((subject, "subject"), *((alias, "alias") for alias in aliases)):
                add(surface, _Entry(subject, how, True, None), overwrite=True)  # type: ignore[arg-type]
        return cls(entries)

    def mentions(self, question: str) -> list[EntityMention]:
        """Non-overlapping mentions, left to right; at each word the longest name that matches wins."""
        words = name_tokens(question)
        found: list[EntityMention] = []
        i = 0
        while i < len(words):
            match = self._longest_at(question, words, i)
            if match is None:
                i += 1
                continue
            key, entry = match
            start, end = words[i][1], words[i + len(key) - 1][2]
            found.append(EntityMention(start, end, question[start:end], entry.name, entry.how, entry.stored))
            i += len(key)
        return found

    def _longest_at(self, question: str, words: list[tuple[str, int, int]],
                    i: int) -> tuple[tuple[str, ...], _Entry] | None:
        for key in self._by_first.get(words[i][0], ()):
            if tuple(word for word, _, _ in words[i: i + len(key)]) != key:
                continue
            entry = self._entries[key]
            written = question[words[i][1]: words[i + len(key) - 1][2]]
            if entry.exact_case is not None and written.replace(".", "") != entry.exact_case.replace(".", ""):
                continue
            return key, entry
        return None

    def __len__(self) -> int:
        return len(self._entries)
