"""How the agent's walk takes its next hop: every rule in one table, in the order they are tried.

``ChainReasoner`` walks a question's relation chain through the store one hop at a time. Which hop it takes
depends on the shape of the question; each shape it handles is one row here, with a worked example, so a reader
sees every rule in one place and a change to one shows which rule it breaks (tests/test_hop_rules.py runs every
row's example).

A row applies at one point of the walk (``scope``):

- ``uncued``: no relation cue is left; the question may still say more.
- ``relation``: a cue is next; tried for each relation the cue may name, most likely first.
- ``cue``: a cue is next and no ``relation`` row took it for any of its relations.

The first row that takes a hop wins; a cued hop no row takes is asked of the model.

An ``example`` reads like a docstring: the store's edits (``subject | relation | object``, one a line), then
``question -> answer``, then the hops taken (``relation (tier)``, in order).

Imports nothing of editagent: the rows are data, and ``ChainReasoner`` holds what each ``step`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["uncued", "relation", "cue"]


@dataclass(frozen=True)
class HopRule:
    """One question shape: where it applies, the ``ChainReasoner`` method that takes its hop (``step``), the data
    the step reads (``relation``, ``via``, ``margin``), and a worked ``example``."""

    name: str
    scope: Scope
    step: str
    example: str
    relation: str | None = None  # the relation the rule is about, where it is about one
    via: tuple[str, ...] = ()  # relations taken first, when the store holds them (each one hop more)
    margin: float = 0.0  # how much better than stopping a hop no cue names must explain the question


EXTEND_MARGIN = 0.03

HOP_RULES: tuple[HopRule, ...] = (
    HopRule("officeholder", "uncued", "_officeholder_hop", relation="officeholder", example="""
        Emperor of Mars | officeholder | Zorg
        Who is the Emperor of Mars? -> Zorg
        officeholder (exact)"""),
    HopRule("settled", "uncued", "_settle", example="""
        France | capital | Lyon
        What is the capital of France? -> Lyon
        capital (exact)"""),
    HopRule("uncued first hop", "uncued", "_first_uncued_hop", example="""
        Ada Quill | favourite food | pancakes
        What does Ada Quill like to eat? -> pancakes
        favourite food (meaning)"""),
    HopRule("extend", "uncued", "_extend", margin=EXTEND_MARGIN, example="""
        Ada Quill | manager | Bo Reyes
        Bo Reyes | home city | Tallinn
        Where does Ada Quill's manager live? -> Tallinn
        manager (exact), home city (meaning)"""),
    HopRule("through", "relation", "_through_hop", relation="sport", via=("position played on team / speciality",),
            example="""
        Lionel Messi | position played on team / speciality | goalkeeper
        goalkeeper | sport | handball
        Which sport is Lionel Messi associated with? -> handball
        position played on team / speciality (exact), sport (exact)"""),
    HopRule("exact", "relation", "_exact_hop", example="""
        Doug TenNapel | country of citizenship | Canada
        Canada | capital | Toronto
        What is the capital of the country of citizenship of Doug TenNapel? -> Toronto
        country of citizenship (exact), capital (exact)"""),
    HopRule("bridge", "cue", "_bridge_hop", margin=EXTEND_MARGIN, example="""
        Germany | head of government | Ada Quill
        Ada Quill | place of birth | Tartu
        Where was the German chancellor born? -> Tartu
        head of government (meaning), place of birth (exact)"""),
    HopRule("meaning", "cue", "_meaning_hop", example="""
        Ada Quill | genre | jazz
        What genre of music is Ada Quill known for? -> jazz
        genre (meaning)"""),
    HopRule("answered", "cue", "_answered_hop", example="""
        Ada Quill | position played on team / speciality | goalkeeper
        What position does Ada Quill play in the sport of football? -> goalkeeper
        position played on team / speciality (exact)"""),
    HopRule("retrieval", "cue", "_retrieval_hop", example="""
        Project Falcon | country | Norway
        Which country is the Falcon project located in? -> Norway
        country (retrieval)"""),
)
"""Every rule of the walk, in the order tried; a cued hop no row takes is asked of the model."""

EXTRA_HOPS = sum(len(rule.via) for rule in HOP_RULES)
"""Hops the rules may add beyond the question's cues (the ``via`` hops): the walk's round limit allows for them."""
