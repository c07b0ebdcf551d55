"""Known relations: a canonical label, a sentence template and a question template each.

The table covers the Wikidata relations that MQuAKE uses, whose templates follow
MQuAKE's cloze and question templates (princeton-nlp/MQuAKE, MIT licence) with
their typos fixed, and common relations beside them. Any other relation is
accepted too: it keeps the caller's wording, and its sentence and question are
written from its own label ("The manager of Alice is Bob").

Imports nothing of editagent but the leaves ``names`` and ``words``, so every floor may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from editagent.names import text_key
from editagent.words import TRAILING_PREPOSITIONS, VERB_STARTS


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
             ("produced by",)),
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
             ("director",)),
    Relation("officeholder", "The {s} is {o}.", "Who is the {s}?", "P1308"),
    Relation("languages spoken, written or signed", "{s} speaks the language of {o}.",
             "Which language does {s} speak?", "P1412", ("language spoken", "languages spoken")),
)


# Relations MQuAKE does not use, with the questions people ask about them. Storing one of these gets its templates;
# and the reasoner weighs a question against them (``editagent.linking``), so that "How old is X?" is not taken for
# an edit about X's team. The templates are ordinary English, not tuned to any test set.
_MORE: tuple[Relation, ...] = (
    Relation("date of birth", "{s} was born on {o}.", "When was {s} born?", "P569", ("birthday", "birth date")),
    Relation("date of death", "{s} died on {o}.", "When did {s} die?", "P570"),
    Relation("age", "{s} is {o} years old.", "How old is {s}?"),
    Relation("height", "{s} is {o} tall.", "How tall is {s}?", "P2048"),
    Relation("mass", "{s} weighs {o}.", "How much does {s} weigh?", "P2067", ("weight",)),
    Relation("length", "{s} is {o} long.", "How long is {s}?", "P2043"),
    Relation("elevation above sea level", "{s} is {o} above sea level.", "How high is {s}?", "P2044",
             ("elevation", "altitude")),
    Relation("area", "The area of {s} is {o}.", "How large is {s}?", "P2046"),
    Relation("population", "The population of {s} is {o}.", "How many people live in {s}?", "P1082"),
    Relation("number of employees", "{s} has {o} employees.", "How many people work at {s}?", "P1128"),
    Relation("inception", "{s} was founded in {o}.", "When was {s} founded?", "P571",
             ("founding date", "year founded", "date founded")),
    Relation("publication date", "{s} was published in {o}.", "When was {s} published?", "P577",
             ("release date",)),
    Relation("currency", "The currency of {s} is {o}.", "What currency is used in {s}?", "P38"),
    Relation("largest city", "The largest city of {s} is {o}.", "What is the largest city in {s}?"),
    Relation("highest point", "The highest point of {s} is {o}.", "What is the highest point of {s}?", "P610"),
    Relation("anthem", "The anthem of {s} is {o}.", "What is the national anthem of {s}?", "P85"),
    Relation("motto", "The motto of {s} is {o}.", "What is the motto of {s}?", "P1451"),
    Relation("time zone", "{s} is in the time zone {o}.", "Which time zone is {s} in?", "P421"),
    Relation("shares border with", "{s} shares a border with {o}.", "Which country borders {s}?", "P47",
             ("neighbour", "neighbor", "borders")),
    Relation("member of sports team", "{s} plays for {o}.", "Which team does {s} play for?", "P54",
             ("plays for", "team", "club")),
    Relation("home venue", "The home venue of {s} is {o}.", "Where does {s} play its home games?", "P115",
             ("stadium", "home ground")),
    Relation("league", "{s} plays in the league {o}.", "Which league does {s} play in?", "P118"),
    Relation("residence", "{s} lives in {o}.", "Where does {s} live?", "P551", ("lives in", "home")),
    Relation("native language", "The native language of {s} is {o}.", "What is the native language of {s}?",
             "P103", ("mother tongue", "first language")),
    Relation("mother", "The mother of {s} is {o}.", "Who is the mother of {s}?", "P25", ("mom",)),
    Relation("father", "The father of {s} is {o}.", "Who is the father of {s}?", "P22", ("dad",)),
    Relation("sibling", "{s}'s sibling is {o}.", "Who is the sibling of {s}?", "P3373", ("brother", "sister")),
    Relation("partner", "{s}'s partner is {o}.", "Who is the partner of {s}?", "P451",
             ("boyfriend", "girlfriend", "unmarried partner")),
    Relation("position held", "{s} holds the position of {o}.", "What position does {s} hold?", "P39",
             ("job title", "title")),
    Relation("member of political party", "{s} is a member of the party {o}.", "Which party does {s} belong to?",
             "P102", ("political party", "party")),
    Relation("award received", "{s} received the award {o}.", "Which award did {s} receive?", "P166",
             ("award", "prize")),
    Relation("field of work", "{s} works in the field of {o}.", "What field does {s} work in?", "P101"),
    Relation("instrument", "{s} plays the {o}.", "Which instrument does {s} play?", "P1303"),
    Relation("film director", "{s} was directed by {o}.", "Who directed {s}?", "P57", ("directed by",)),
    Relation("composer", "The music of {s} was composed by {o}.", "Who composed the music of {s}?", "P86",
             ("composed by",)),
    Relation("producer", "{s} was produced by {o}.", "Who produced {s}?", "P162"),
    Relation("screenwriter", "{s} was written for the screen by {o}.", "Who wrote the screenplay of {s}?", "P58"),
    Relation("cast member", "{o} acted in {s}.", "Who starred in {s}?", "P161", ("actor", "star", "starring")),
    Relation("publisher", "{s} was published by {o}.", "Who published {s}?", "P123", ("published by",)),
    Relation("discoverer or inventor", "{s} was discovered or invented by {o}.", "Who discovered or invented {s}?",
             "P61", ("inventor", "discoverer", "invented by", "discovered by")),
    Relation("named after", "{s} is named after {o}.", "Who or what is {s} named after?", "P138"),
    Relation("parent organization", "The parent organization of {s} is {o}.",
             "Which organization is the parent of {s}?", "P749", ("parent company",)),
    Relation("subsidiary", "{s} owns the subsidiary {o}.", "What is a subsidiary of {s}?", "P355"),
    Relation("industry", "{s} is in the industry of {o}.", "Which industry is {s} in?", "P452"),
    Relation("stock exchange", "{s} is listed on the stock exchange {o}.", "Which stock exchange lists {s}?",
             "P414"),
    Relation("product", "{s} makes {o}.", "What does {s} make?", "P1056", ("products",)),
    Relation("operating system", "{s} runs the operating system {o}.", "Which operating system does {s} run?",
             "P306"),
    Relation("programming language", "{s} is written in the programming language {o}.",
             "Which programming language is {s} written in?", "P277"),
    Relation("official website", "The official website of {s} is {o}.", "What is the website of {s}?", "P856",
             ("website",)),
    Relation("place of burial", "{s} is buried in {o}.", "Where is {s} buried?", "P119"),
    Relation("cause of death", "{s} died of {o}.", "What did {s} die of?", "P509"),
    Relation("military branch", "{s} served in the {o}.", "Which military branch did {s} serve in?", "P241"),
    Relation("doctoral advisor", "The doctoral advisor of {s} was {o}.", "Who was the doctoral advisor of {s}?",
             "P184"),
    Relation("color", "The colour of {s} is {o}.", "What colour is {s}?", "P462", ("colour",)),
    Relation("ethnic group", "{s} belongs to the ethnic group {o}.", "Which ethnic group does {s} belong to?",
             "P172"),
    Relation("mouth of the watercourse", "{s} flows into {o}.", "Where does {s} flow into?", "P403"),
)


_LOOKUP: dict[str, Relation] = {}
for _relation in (*_TABLE, *_MORE):
    for _name in (_relation.label, _relation.wikidata_id, *_relation.aliases):
        if _name:
            _LOOKUP[text_key(_name)] = _relation


def known_relations() -> tuple[Relation, ...]:
    """Every relation with templates: MQuAKE's and the common ones beside them."""
    return (*_TABLE, *_MORE)


def mquake_relations() -> tuple[Relation, ...]:
    """The relations MQuAKE uses (their sentence templates are the ones its edit sentences follow)."""
    return _TABLE


def find_relation(name: str) -> Relation | None:
    """The registered relation for a label, alias or Wikidata id (``"P27"``), else ``None``."""
    return _LOOKUP.get(text_key(name))


def canonical_relation(name: str) -> str:
    """The canonical label of a known relation; any other relation keeps its own (whitespace-normalised) wording."""
    found = find_relation(name)
    return found.label if found else " ".join(name.split())


def _is_verb_phrase(wording: str) -> bool:
    """A relation phrased as a verb reads "S works at O"; one phrased as a noun, "The favourite food of S is O"."""
    return wording.casefold().startswith(VERB_STARTS) or wording.endswith(TRAILING_PREPOSITIONS)


def fact_sentence(subject: str, relation: str, obj: str) -> str:
    """The natural sentence for a fact, from the relation's template when it is known."""
    found = find_relation(relation)
    if found:
        return found.sentence.format(s=subject, o=obj)
    wording = " ".join(relation.split())
    if _is_verb_phrase(wording):
        return f"{subject} {_with_verb(wording)} {obj}."
    return f"The {wording} of {subject} is {obj}."


def _with_verb(wording: str) -> str:
    """A prepositional relation with no verb of its own ("located in", "married to") reads with "is"; one that starts
    with a verb ("works at", "reports to", "is married to") reads as written."""
    first = wording.split()[0].casefold()
    if wording.casefold().startswith(VERB_STARTS) or (first.endswith("s") and not first.endswith("ss")):
        return wording
    return f"is {wording}"


# Words people use for a relation that must not rename a user's relation (a company's "president" is not a head of
# state): used only to judge what a question asks for (``relation_descriptions``), never to canonicalise.
_ASKED_AS: dict[str, tuple[str, ...]] = {
    "head of state": ("president", "king", "queen", "monarch"),
    "head of government": ("prime minister", "premier", "chancellor", "mayor", "governor", "PM"),
    "chief executive officer": ("boss", "chief executive", "who runs X"),
    "chairperson": ("chair", "head of the board"),
    "country of citizenship": ("nationality", "passport", "which country is X from"),
    "place of birth": ("birthplace", "where was X born"),
    "place of death": ("where did X die",),
    "spouse": ("husband", "wife", "who is X married to"),
    "author": ("writer", "who wrote X"),
    "performer": ("actor", "who played X", "who portrayed X", "singer"),
    "creator": ("maker", "who made X"),
    "manufacturer": ("maker", "who makes X", "who builds X"),
    "employer": ("company", "who does X work for"),
    "headquarters location": ("main office", "where is X based"),
    "member of sports team": ("club", "side", "which club does X play for"),
    "head coach": ("coach", "trainer", "who trains X"),
    "residence": ("home", "where does X live"),
    "capital": ("capital city", "seat of government"),
    "official language": ("language", "which language is spoken in X"),
    "educated at": ("university", "college", "where did X study"),
    "founded by": ("founder", "who founded X"),
    "inception": ("founding year", "when was X founded"),
    "occupation": ("job", "profession", "what does X do for a living"),
}


def relation_descriptions(relation: str) -> list[str]:
    """Ways of asking for ``relation`` about an entity "X", to compare a question with (the question's own entity
    replaced by "X"): the question template, the relation as a noun phrase, its aliases and usual wordings."""
    found = find_relation(relation)
    label = found.label if found else " ".join(relation.split())
    texts = [fact_question("X", label), fact_phrase(label, "X")]
    if not found:
        texts.append(f"Who is the {label} of X?" if not _is_verb_phrase(label) else f"X {label} whom?")
    for wording in (*(found.aliases if found else ()), *_ASKED_AS.get(label, ())):
        texts.append(f"{wording[0].upper()}{wording[1:]}?" if "X" in wording.split() else
                     f"X {wording}" if _is_verb_phrase(wording) else f"the {wording} of X")
    return list(dict.fromkeys(texts))


def fact_phrase(relation: str, subject: str) -> str:
    """The object of (subject, relation) as a noun phrase ("the capital of France"), to nest in a longer question."""
    found = find_relation(relation)
    wording = found.label if found else " ".join(relation.split())
    if not found and _is_verb_phrase(wording):
        return f"the one {subject} {wording}"
    return f"the {wording} of {subject}"


def fact_question(subject: str, relation: str) -> str:
    """A single-hop question asking for the object of (subject, relation)."""
    found = find_relation(relation)
    if found:
        return found.question.format(s=subject)
    wording = " ".join(relation.split())
    if _is_verb_phrase(wording):
        return f"{subject} {wording} what?"
    return f"What is the {wording} of {subject}?"
