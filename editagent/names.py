"""When two names are one entity's: the keys every part of editagent compares names by.

One module decides it, so that the store, the graph and the reasoner agree: what the store supersedes on
(``Edit.key``) is what the reasoner takes for one entity (``name_key``), and "The Beatles" and "Beatles" are one
subject to both. Three keys, from strict to loose:

- ``text_key``: case and spacing only. Relation labels, prompts and answers, which are text, not names.
- ``name_key``: the entity key. Also punctuation and a leading "the" ("J.K. Rowling" = "J. K. Rowling").
- ``normalise_name``: the linker's form for finding a name among a question's words. Also accents and
  abbreviation dots ("Malmo" = "Malmö", "U.K." = "UK").

``same_entity``, ``names_match`` and ``named_in`` decide the looser cases (a longer form of a name, a misspelling).
``normalise_answer`` is SQuAD's answer normalisation, kept exactly as SQuAD's for scoring.

Imports nothing of editagent but the word lists, and nothing heavy: the schema keys the store by it.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

from editagent.words import FUNCTION_WORDS

_NOT_WORD = re.compile(r"[^\w\s]")
_TOKEN = re.compile(r"(?:[^\W_]\. ?)+[^\W_]\.?(?![^\W_])|[^\W_]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def text_key(text: str) -> str:
    """Case-folded, whitespace collapsed: "Capital  City" = "capital city"."""
    return " ".join(text.casefold().split())


def _core_key(name: str) -> str:
    """``name_key`` without its fallback: empty for a name of only punctuation or "the"."""
    key = text_key(_NOT_WORD.sub(" ", name))
    return key[4:] if key.startswith("the ") else ("" if key == "the" else key)


def name_key(name: str) -> str:
    """The key of an entity's name: case, spacing, punctuation and a leading "the" do not count ("The Beatles" =
    "beatles", "J.K. Rowling" = "J. K. Rowling"). A name that is nothing but those keeps its own text key, so
    "The" and "?" are not one entity."""
    return _core_key(name) or text_key(name)


def same_entity(a: str, b: str) -> bool:
    """Whether two names plausibly denote one entity: equal keys, or one the whole-word start or end of the other
    ("United States" / "United States of America"), that part at least two words (one word alone is too weak a clue:
    "Paris" / "Paris Hilton"; and inside a name, "Great Britain" / "United Kingdom of Great Britain and Ireland", the
    part names something else)."""
    ka, kb = _core_key(a), _core_key(b)
    if not ka or not kb:
        return False
    if ka == kb:
        return True
    short, long = sorted((ka, kb), key=len)
    return " " in short and (long.startswith(short + " ") or long.endswith(" " + short))


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def name_tokens(text: str) -> list[tuple[str, int, int]]:
    """(normalised word, start, end) for each word; initials are one word: "U.K." and "J. K." give "uk", "jk"."""
    return [(_fold(re.sub(r"[.\s]", "", m.group())), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def normalise_name(name: str) -> str:
    """The form names are compared in: folded words joined by one space, a leading "the" dropped."""
    words = [word for word, _, _ in name_tokens(name)]
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    return " ".join(words)


def names_match(a: str, b: str) -> bool:
    """Whether two names are one entity's: same normalised name, or a plausible variant (``same_entity``)."""
    return normalise_name(a) == normalise_name(b) or same_entity(a, b)


def named_in(text: str, names: Iterable[str]) -> bool:
    """Whether ``text`` names one of ``names``, allowing small spelling differences ("Falcon project" for "Project
    Falcon" by its words, "Alise" for "Alice" by its letters)."""
    words = normalise_name(text).split()
    for name in names:
        key = normalise_name(name).split()
        if not key:
            continue
        distinctive = [w for w in key if w not in FUNCTION_WORDS and len(w) > 2]
        if distinctive and all(w in words for w in distinctive) and len(distinctive) >= len(key) / 2:
            return True
        width = len(key)
        for i in range(max(len(words) - width + 1, 0)):
            if _similar(" ".join(words[i: i + width]), " ".join(key)):
                return True
    return False


def _similar(a: str, b: str, ratio: float = 0.8) -> bool:
    from difflib import SequenceMatcher  # noqa: PLC0415 - only fuzzy matching needs it

    return len(b) >= 4 and SequenceMatcher(None, a, b).ratio() >= ratio


def normalise_answer(text: str) -> str:
    """SQuAD's ``normalize_answer``: lowercase, drop ASCII punctuation, drop a/an/the, collapse whitespace.

    Kept exactly as SQuAD's (punctuation is deleted, not spaced, so ``"U.K."`` -> ``"uk"``) so
    scores compare with work that uses it.
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())
