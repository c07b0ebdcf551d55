"""The English word lists the rule-based readers use, in one place so that a word added for one reader is seen by
the others and a reader's list is not re-typed elsewhere with a word missing.

Imports nothing: every floor of editagent (the schema's relation table included) may use it.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\S+", text))


FUNCTION_WORDS = _words("""
    a an the of in on at to by for from with into onto about as and or but so than then that this these those
    what which who whom whose where when why how is are was were be been being do does did done has have had
    can could would should will shall may might must it its it's i me my we our you your he him his she her they
    them their there here now these days currently today still please tell me name give show say find know
    let us s 's also any some one ones person people thing named called""")
"""Words that name no relation and no entity: a question with none but these besides its entity and its relation
cues says nothing more (``decompose.chain``); a name's distinctive words are its others (``names.named_in``)."""

QUESTION_WORDS = _words("""what which who whom whose where when why how in on from at to by for of is are was were
    can could do does did name tell list a an the""")
"""Words that open a question rather than a name: a capitalised one at the start of a question is not an entity."""

NAME_CONNECTORS = _words("of the de van von da del la le du y and & der den di al bin el")
"""Lower-case words that may sit inside a capitalised name ("Bank of America", "Leonardo da Vinci")."""

GENERAL_RELATION_WORDS = _words("""of the a an in on at to by for from with and or x is who what which where
    city country place name team language location date person company organisation organization type kind head
    birth death member""")
"""Words too general to make two relations the same ("capital city" and "largest city" are not)."""

VERB_STARTS = ("is ", "was ", "has ", "had ", "are ", "were ", "works", "lives", "speaks", "plays", "owns",
               "likes", "loves", "prefers", "uses", "leads", "runs", "belongs", "holds")
"""How a relation phrased as a verb begins ("works at", "is married to"): it reads "S works at O", where one
phrased as a noun ("favourite food") reads "The favourite food of S is O"."""

TRAILING_PREPOSITIONS = (" of", " in", " at", " by", " to", " for")
"""How a relation phrased as a verb may end ("married to", "born in")."""

PREPOSITIONS = frozenset({"of", "in", "at", "by", "to", "for", "with", "on", "from", "into", "as"})
"""A relation name ending in one of these is not a noun ("born in"), so it makes no "the ... of S" phrase."""

RELATION_VERBS = frozenset({"is", "was", "has", "had", "are", "were", "works", "lives", "speaks", "plays", "owns",
                            "spoken", "written", "born", "likes", "loves", "holds", "runs", "leads", "uses", "makes",
                            "member", "held"})
"""Verbs (and verb-like words) that start or end a relation name that does not read as a noun ("spoken by")."""
