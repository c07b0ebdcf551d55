"""Read a multi-hop question as a start entity and an ordered chain of relation mentions.

"What languages are spoken by CM Punk's spouse?" -> ``CM Punk``, [spouse], [languages spoken].

No language model: cue phrases name relations, capitalised or quoted spans name the
entity, and English word order gives the chain (the relation nearest the entity is
applied first; a leading "What is the X of ..." is applied last). A mention may stay
ambiguous ("country" could be citizenship or origin); the reasoning loop settles it
against the edit store. The cues are ordinary English for the Wikidata relations in
``editagent.relations``; a relation the table does not know is cued by its own words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from editagent.relations import canonical_relation, find_relation
from editagent.words import NAME_CONNECTORS, QUESTION_WORDS

# (cue pattern, candidate relations (Wikidata ids or labels), most likely first, weak).
# A weak cue ("located") only counts when nothing else names a relation.
_CUES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    (r"country of citizenship|citizen\w*|nationality|national of|passport", ("P27",), False),
    (r"country of origin|originat\w*|(?:created|invented|made) in", ("P495",), False),
    (r"comes? from|came from|hails? from", ("P495", "P27"), False),
    (r"head of state|head-of-state|chief of state|highest (?:political |government )?(?:office|position)",
     ("P35",), False),
    (r"head of (?:the )?government|prime minister|premier", ("P6",), False),
    (r"leader\w*|ruler\w*|leads|led by", ("P35", "P6", "P488"), False),
    (r"chief executive officer|ceo|chief executive", ("P169",), False),
    (r"chair\w*|president", ("P488", "P35"), False),
    (r"official language", ("P37",), False),
    (r"original language", ("P364",), False),
    (r"continent\w*", ("P30",), False),
    (r"capital\w*", ("P36",), False),
    (r"countr\w*|nation|nations", ("P17", "P27", "P495"), False),
    (r"place of birth|birth ?place|born|birth city|city of birth|native city|home ?town", ("P19",), False),
    (r"place of death|die|dies|died|death|pass\w* away|demise", ("P20",), False),
    (r"spouse\w*|married|marry|wife|husband|partner", ("P26",), False),
    (r"child\w*|son|daughter\w*|offspring", ("P40",), False),
    (r"author\w*|wrote|writer|written by|penned", ("P50",), False),
    (r"educated|alma mater|universit\w*|college|studied|attended", ("P69",), False),
    (r"occupation|profession|job|line of work|kind of work|type of work", ("P106",), False),
    (r"employ\w*|works? for|worked for|working for", ("P108",), False),
    (r"found\w*|establish\w*|co-?found\w*", ("P112", "P740"), False),
    (r"own\w*", ("P127",), False),
    (r"genre\w*|type of music|kind of music|style of music|music style|musical style", ("P136",), False),
    (r"religio\w*|faith|worship\w*|church", ("P140",), False),
    (r"headquarter\w*|head office", ("P159",), False),
    (r"based", ("P159",), True),
    (r"creat\w*|invent\w*", ("P170",), False),
    (r"perform\w*|sang|sung|singer", ("P175",), False),
    (r"manufactur\w*|produc\w*|made by|maker", ("P176",), False),
    (r"develop\w*", ("P178",), False),
    (r"twin\w*|sister cit\w*", ("P190",), False),
    (r"record label|label", ("P264",), False),
    (r"head coach|coach\w*", ("P286",), False),
    (r"position\w*", ("P413",), False),
    (r"broadcast\w*|network|aired", ("P449",), False),
    (r"member\w*", ("P463",), False),
    (r"sport\w*|game", ("P641",), False),
    (r"work location|worked in|works in|work in|place of work|workplace", ("P937",), False),
    (r"director\w*|manager\w*|directs|managed", ("P1037",), False),
    (r"famous for|known for|notable work", ("P800",), False),
    (r"languages?|speak\w*|spoken|tongue", ("P1412", "P37", "P364", "P407"), False),
    (r"sign\w*", ("P1412",), False),
    (r"located|situated|location", ("P17", "P131", "P276", "P30"), True),
)

# A leading wh-phrase whose noun is itself a relation ("What is the capital of ...") names the last hop.
_WH_HEAD = re.compile(r"\s*(?:(?:in|on|from|at|to|for|by|with) )?(?:what|which|who|whom|whose)(?: is| was| are| were)?"
                      r"(?: the)?\s*")
_POSSESSIVE = ("'s", "\u2019s", "'", "\u2019")  # "Dessalines'" too
_QUOTED = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d')
_ADJUNCT = re.compile(r"\b(?:in|on|at) (?:the|a|his|her|its|their|this|that) $", re.IGNORECASE)
_MERGE_DISTANCE = 40  # characters: two cues of one relation this close are one mention


_COMPILED = tuple((re.compile(rf"\b(?:{pattern})\b"), tuple(canonical_relation(r) for r in relations), weak)
                  for pattern, relations, weak in _CUES)


@dataclass
class RelationMention:
    """Where a relation is named in the question, and which relations it may be (most likely first)."""

    start: int
    end: int
    relations: tuple[str, ...]


@dataclass
class ParsedQuestion:
    question: str
    entity: str | None
    chain: list[RelationMention]
    span: tuple[int, int] | None = None  # where the entity is named

    @property
    def ok(self) -> bool:
        return self.entity is not None and bool(self.chain)


def parse_question(question: str, *, known_entities: Iterable[str] = (),
                   extra_relations: Iterable[str] = ()) -> ParsedQuestion:
    """The start entity and the chain of relation mentions, innermost first.

    ``known_entities``: names the store knows (edit subjects), preferred when they occur verbatim.
    ``extra_relations``: relation labels outside the built-in table (user-defined), cued by their words.
    """
    span = _entity_span(question, known_entities)
    if span is None:
        return ParsedQuestion(question, None, [])
    mentions = _mentions(question, span, extra_relations)
    if len(mentions) > 1:  # "What position does X hold in the sport?": a closing "in the sport" qualifies, no hop
        mentions = [m for m in mentions if not (_ADJUNCT.search(question[: m.start]) and
                                                not question[m.end:].strip(" ?.!"))]
    return ParsedQuestion(question, question[span[0]: span[1]], _order(question, span, mentions), span)


def _entity_span(question: str, known_entities: Iterable[str]) -> tuple[int, int] | None:
    quoted = _QUOTED.search(question)
    if quoted:
        group = 1 if quoted.group(1) else 2
        return quoted.start(group), quoted.end(group)
    folded = question.casefold()
    known: tuple[int, int] | None = None
    for name in known_entities:
        at = _find_words(folded, name.casefold())
        if at >= 0 and (known is None or len(name) > known[1] - known[0]):
            known = (at, at + len(name))
    spans = _capitalised_spans(question)
    # A known name inside a capitalised run whose other words are cues or connectors ("CEO of Acme Corp") is the
    # entity; inside a longer name ("West Germany") it is not.
    inside = known is not None and any(s <= known[0] and known[1] <= e and _only_cues(question[s:known[0]] + " " +
                                                                                     question[known[1]:e])
                                       for s, e in spans)
    if known and (not spans or inside or known[1] - known[0] >= max(e - s for s, e in spans) - 2):
        return known
    if not spans:
        return None
    return max(spans, key=lambda s: (s[1] - s[0], s[0]))


def _find_words(text: str, phrase: str) -> int:
    match = re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) if phrase else None
    return match.start() if match else -1


def _capitalised_spans(question: str) -> list[tuple[int, int]]:
    """Runs of capitalised words (with connectors inside), minus runs that are only relation cues ("CEO")."""
    spans: list[tuple[int, int]] = []
    run: list[tuple[int, int] | None] = []

    def close() -> None:
        while run and run[-1] is None:
            run.pop()
        words = [w for w in run if w is not None]
        if words:
            start, end = words[0][0], words[-1][1]
            if not all(_is_cue(word) for word in question[start:end].split()):
                spans.append((start, end))
        run.clear()

    for index, token in enumerate(re.finditer(r"[^\s?,;:!]+", question)):
        text = token.group()
        ending = next((e for e in _POSSESSIVE if text.endswith(e)), "")
        possessive = bool(ending)
        word = text[: len(text) - len(ending)]
        capital = bool(word) and (word[0].isupper() or word[0].isdigit() or word[1:2].isupper())
        if index == 0 and word.casefold() in QUESTION_WORDS:
            capital = False
        if capital:
            run.append((token.start(), token.start() + len(word)))
            if possessive:
                close()
        elif run and word.casefold() in NAME_CONNECTORS:
            run.append(None)
        else:
            close()
    close()
    return spans


def _only_cues(text: str) -> bool:
    return all(_is_cue(word) or word.casefold() in NAME_CONNECTORS for word in re.findall(r"[^\s,;:]+", text)
               if word.strip(_POSSESSIVE[0] + _POSSESSIVE[1]))


def _is_cue(word: str) -> bool:
    return any(pattern.fullmatch(word.casefold()) for pattern, _, _ in _COMPILED)


def _mentions(question: str, span: tuple[int, int], extra_relations: Iterable[str]) -> list[RelationMention]:
    folded = question.casefold()
    own = [(re.compile(rf"\b{re.escape(r.casefold())}\b"), (r,), False)
           for r in extra_relations if r and find_relation(r) is None]
    hits = [(m.start(), m.end(), relations, weak, is_own) for is_own, table in ((True, own), (False, _COMPILED))
            for pattern, relations, weak in table for m in pattern.finditer(folded)]
    hits.sort(key=lambda h: (h[0] - h[1], not h[4], h[0]))  # longest cue first; the user's own relation first
    taken = [span[0] <= i < span[1] for i in range(len(folded))]
    strong: list[RelationMention] = []
    weak_only: list[RelationMention] = []
    for start, end, relations, weak, _ in hits:
        same = next((m for m in (*strong, *weak_only) if (m.start, m.end) == (start, end)), None)
        if same is not None:  # the same words cue two relations ("manager": the user's, and director / manager)
            same.relations = tuple(dict.fromkeys((*same.relations, *relations)))
            continue
        if any(taken[start:end]):
            continue
        taken[start:end] = [True] * (end - start)
        (weak_only if weak else strong).append(RelationMention(start, end, relations))
    return _merge(strong or weak_only)


def _merge(mentions: list[RelationMention]) -> list[RelationMention]:
    """One mention per relation named twice ("the country ... is a citizen of"): the narrower reading wins,
    placed where the first cue stands (that is where the phrase sits in the chain)."""
    mentions = sorted(mentions, key=lambda m: m.start)
    changed = True
    while changed:
        changed = False
        for a in mentions:
            for b in mentions:
                if a is b or a.start > b.start:
                    continue
                shared = [r for r in a.relations if r in b.relations]
                close = b.start - a.start < _MERGE_DISTANCE
                if shared and (len(a.relations) > 1 or len(b.relations) > 1 or close):
                    narrow = a.relations if len(a.relations) <= len(b.relations) else b.relations
                    a.relations = tuple(r for r in narrow if r in shared)
                    mentions.remove(b)
                    changed = True
                    break
            if changed:
                break
    return mentions


def _order(question: str, span: tuple[int, int], mentions: Sequence[RelationMention]) -> list[RelationMention]:
    start, end = span
    possessive = question[end: end + 2].startswith(_POSSESSIVE)
    left = sorted((m for m in mentions if m.end <= start), key=lambda m: -m.start)  # nearest first
    after_possessive: list[RelationMention] = []
    clauses: list[RelationMention] = []
    for mention in sorted((m for m in mentions if m.start >= end), key=lambda m: m.start):
        anchor = after_possessive[-1].end if after_possessive else end
        gap = question[anchor: mention.start]
        if (possessive or after_possessive) and re.fullmatch(r"(?:'s|\u2019s|'|\u2019)\s*(?:[\w-]+\s+)?", gap):
            after_possessive.append(mention)
        else:
            clauses.append(mention)
    if clauses and left and _WH_HEAD.fullmatch(question[: left[-1].start].casefold()):
        return after_possessive + left[:-1] + clauses + [left[-1]]
    return after_possessive + left + clauses
