"""Known relations: a canonical label, a sentence template and a question template each.

The table covers the Wikidata relations that MQuAKE uses. The templates follow
MQuAKE's cloze and question templates (princeton-nlp/MQuAKE, MIT licence), with
their typos fixed. Any other relation is accepted too: it keeps the caller's
wording and gets a generic sentence.

Imports nothing of editagent, so every floor may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Relation:
    """One relation. ``sentence`` and ``question`` use ``{s}`` (subject) and ``{o}`` (object)."""

    label: str
    sentence: str
    question: str
    wikidata_id: str | None = None
    aliases: tuple[str, ...] = field(default=())


_TABLE: tuple[Relation, ...] = (
    Relation("country", "{s} is located in the country of {o}.", "Which country is {s} located in?", "P17"),
    Relation("place of birth", "{s} was born in the city of {o}.", "Which city was {s} born in?", "P19",
             ("born in", "birthplace")),
    Relation("place of death", "{s} died in the city of {o}.", "Which city did {s} die in?", "P20", ("died in",)),
    Relation("spouse", "{s} is married to {o}.", "Who is {s} married to?", "P26", ("married to", "husband", "wife")),
    Relation("country of citizenship", "{s} is a citizen of {o}.", "What is the country of citizenship of {s}?",
             "P27", ("citizenship", "citizen of", "nationality")),
    Relation("continent", "{s} is located in the continent of {o}.", "Which continent is {s} located in?", "P30"),
    Relation("head of state", "The name of the current head of state in {s} is {o}.",
             "Who is the head of state of {s}?", "P35"),
    Relation("capital", "The capital of {s} is {o}.", "What is the capital of {s}?", "P36", ("capital city",)),
    Relation("official language", "The official language of {s} is {o}.", "What is the official language of {s}?",
             "P37"),
    Relation("child", "{s}'s child is {o}.", "Who is {s}'s child?", "P40"),
    Relation("author", "The author of {s} is {o}.", "Who is the author of {s}?", "P50", ("written by",)),
    Relation("head of government", "The name of the current head of the {s} government is {o}.",
             "Who is the head of the government of {s}?", "P6"),
    Relation("educated at", "The university where {s} was educated is {o}.",
             "Which university was {s} educated at?", "P69"),
    Relation("occupation", "{s} works in the field of {o}.", "What kind of work does {s} do?", "P106"),
    Relation("employer", "{s} is employed by {o}.", "Who is the employer of {s}?", "P108", ("employed by",)),
    Relation("founded by", "{s} was founded by {o}.", "Who founded {s}?", "P112", ("founder",)),
    Relation("owned by", "{s} is owned by {o}.", "Who owns {s}?", "P127", ("owner",)),
    Relation("located in the administrative territorial entity", "{s} is located in {o}.", "Where is {s} located?",
             "P131"),
    Relation("genre", "The type of music that {s} plays is {o}.", "What type of music does {s} play?", "P136"),
    Relation("religion or worldview", "{s} is affiliated with the religion of {o}.",
             "Which religion is {s} affiliated with?", "P140", ("religion",)),
    Relation("headquarters location", "The headquarters of {s} is located in the city of {o}.",
             "Where are the headquarters of {s}?", "P159", ("headquarters",)),
    Relation("chief executive officer", "The chief executive officer of {s} is {o}.",
             "Who is the chief executive officer of {s}?", "P169", ("ceo",)),
    Relation("creator", "{s} was created by {o}.", "Who created {s}?", "P170", ("created by",)),
    Relation("performer", "{s} was performed by {o}.", "Who performed {s}?", "P175", ("performed by",)),
    Relation("manufacturer", "The company that produced {s} is {o}.", "Which company produced {s}?", "P176",
             ("produced by", "made by")),
    Relation("developer", "{s} was developed by {o}.", "Who developed {s}?", "P178", ("developed by",)),
    Relation("twinned administrative body", "The twinned administrative body of {s} is {o}.",
             "What is the twinned administrative body of {s}?", "P190", ("twin city",)),
    Relation("record label", "{s} is represented by the record label {o}.", "Which record label represents {s}?",
             "P264"),
    Relation("location", "{s} is located in {o}.", "Where is {s} located?", "P276"),
    Relation("head coach", "The head coach of {s} is {o}.", "Who is the head coach of {s}?", "P286"),
    Relation("original language of film or TV show", "The original language of {s} is {o}.",
             "What is the original language of {s}?", "P364"),
    Relation("language of work or name", "{s} was written in the language of {o}.",
             "Which language was {s} written in?", "P407"),
    Relation("position played on team / speciality", "{s} plays the position of {o}.",
             "Which position does {s} play?", "P413", ("position played",)),
    Relation("original broadcaster", "The original broadcaster of {s} is {o}.",
             "Who is the original broadcaster of {s}?", "P449", ("broadcaster",)),
    Relation("member of", "{s} is a member of {o}.", "Which organisation is {s} a member of?", "P463"),
    Relation("chairperson", "The chairperson of {s} is {o}.", "Who is the chairperson of {s}?", "P488",
             ("chairman", "chair")),
    Relation("country of origin", "{s} was created in the country of {o}.", "Which country was {s} created in?",
             "P495"),
    Relation("sport", "{s} is associated with the sport of {o}.", "Which sport is {s} associated with?", "P641"),
    Relation("location of formation", "{s} was founded in the city of {o}.", "Which city was {s} founded in?",
             "P740"),
    Relation("notable work", "{s} is famous for {o}.", "What is {s} famous for?", "P800", ("famous for",)),
    Relation("work location", "{s} worked in the city of {o}.", "Which city did {s} work in?", "P937"),
    Relation("director / manager", "The director of {s} is {o}.", "Who is the director of {s}?", "P1037",
             ("director", "manager")),
    Relation("officeholder", "The {s} is {o}.", "Who is the {s}?", "P1308"),
    Relation("languages spoken, written or signed", "{s} speaks the language of {o}.",
             "Which language does {s} speak?", "P1412", ("language spoken", "languages spoken")),
)


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


_LOOKUP: dict[str, Relation] = {}
for _relation in _TABLE:
    for _name in (_relation.label, _relation.wikidata_id, *_relation.aliases):
        if _name:
            _LOOKUP[_key(_name)] = _relation


def known_relations() -> tuple[Relation, ...]:
    return _TABLE


def find_relation(name: str) -> Relation | None:
    """The registered relation for a label, alias or Wikidata id (``"P27"``), else ``None``."""
    return _LOOKUP.get(_key(name))


def canonical_relation(name: str) -> str:
    """The canonical label of a known relation; any other relation keeps its own (whitespace-normalised) wording."""
    found = find_relation(name)
    return found.label if found else " ".join(name.split())


# A relation phrased as a verb ("works at", "is married to") reads as "S works at O";
# one phrased as a noun ("favourite food") reads as "The favourite food of S is O".
_VERB_STARTS = ("is ", "was ", "has ", "had ", "are ", "were ", "works", "lives", "speaks", "plays", "owns",
                "likes", "loves", "prefers", "uses", "leads", "runs", "belongs", "holds")


def _is_verb_phrase(wording: str) -> bool:
    return wording.casefold().startswith(_VERB_STARTS) or wording.endswith((" of", " in", " at", " by", " to", " for"))


def fact_sentence(subject: str, relation: str, obj: str) -> str:
    """The natural sentence for a fact, from the relation's template when it is known."""
    found = find_relation(relation)
    if found:
        return found.sentence.format(s=subject, o=obj)
    wording = " ".join(relation.split())
    if _is_verb_phrase(wording):
        return f"{subject} {wording} {obj}."
    return f"The {wording} of {subject} is {obj}."


def fact_question(subject: str, relation: str) -> str:
    """A single-hop question asking for the object of (subject, relation)."""
    found = find_relation(relation)
    if found:
        return found.question.format(s=subject)
    wording = " ".join(relation.split())
    if _is_verb_phrase(wording):
        return f"{subject} {wording} what?"
    return f"What is the {wording} of {subject}?"
