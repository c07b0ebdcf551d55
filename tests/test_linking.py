"""Linking questions to the store: entity names however written (no model), relations by meaning (real MiniLM)."""

from __future__ import annotations

import pytest

from editagent.linking import EntityLinker, RelationLinker, places
from editagent.linking.relations import chain_descriptions
from editagent.models import Embedder
from editagent.names import normalise_name
from editagent.relations import fact_question, fact_sentence, relation_descriptions

STORED = [("United Kingdom", ["UK", "Britain"]), ("Acme Corp", ["Acme Corporation"]), ("Alice", []),
          ("Malmö", []), ("J.K. Rowling", []), ("Georgia", ["my state"]), ("The Lord of the Rings", ["LOTR"])]


@pytest.fixture(scope="module")
def linker() -> EntityLinker:
    return EntityLinker.build(STORED)


def names(linker: EntityLinker, question: str) -> list[tuple[str, str, str]]:
    return [(m.text, m.name, m.how) for m in linker.mentions(question)]


@pytest.mark.parametrize(("question", "expected"), [
    ("who is acme corp's ceo?", [("acme corp", "Acme Corp", "subject")]),
    ("Who runs the Acme Corporation?", [("Acme Corporation", "Acme Corp", "alias")]),
    ("What is the capital of the U.K.?", [("U.K.", "United Kingdom", "alias")]),  # the alias "UK"
    ("Who is the British prime minister?", [("British", "United Kingdom", "place")]),
    ("who is the british prime minister?", [("british", "United Kingdom", "place")]),
    ("Who is Britain's PM?", [("Britain", "United Kingdom", "alias")]),
    ("Where is Malmo?", [("Malmo", "Malmö", "subject")]),
    ("Who wrote lord of the rings?", [("lord of the rings", "The Lord of the Rings", "subject")]),
    ("Where was J. K. Rowling born?", [("J. K. Rowling", "J.K. Rowling", "subject")]),
    ("Where is Georgia?", [("Georgia", "Georgia", "subject")]),  # the user's own Georgia, not the country
])
def test_stored_names_link_however_written(linker: EntityLinker, question: str,
                                           expected: list[tuple[str, str, str]]) -> None:
    assert names(linker, question) == expected
    assert all(m.stored for m in linker.mentions(question))


def test_places_the_store_lacks_link_to_their_own_name_and_short_capitals_only_in_capitals(
        linker: EntityLinker) -> None:
    mentions = linker.mentions("Is the French president in the US with us?")
    assert [(m.text, m.name, m.stored) for m in mentions] == [("French", "France", False),
                                                              ("US", "United States of America", False)]
    assert linker.mentions("tell us a story") == []
    assert linker.mentions("Where does Alicex live?") == []  # whole words only


def test_the_longest_name_wins_and_names_do_not_overlap(linker: EntityLinker) -> None:
    mentions = linker.mentions("Who founded Acme Corp in the United Kingdom?")
    assert [m.name for m in mentions] == ["Acme Corp", "United Kingdom"]
    question = "Who founded Acme Corp in the United Kingdom?"
    assert [question[m.start:m.end] for m in mentions] == ["Acme Corp", "United Kingdom"]


def test_places_table_is_consistent() -> None:
    table = places()
    assert len(table) > 300
    seen: dict[str, str] = {}
    for place in table:
        for surface in (*place.names, *place.demonyms):
            key = normalise_name(surface)
            assert seen.setdefault(key, place.name) == place.name, f"{surface} names two places"
    assert normalise_name("  The U.S.A. ") == "usa" and normalise_name("São Paulo") == "sao paulo"


def test_a_custom_relation_keeps_its_meaning_and_gets_templates_from_its_label() -> None:
    assert fact_sentence("Alice", "manager", "Bob") == "The manager of Alice is Bob."  # not "The director of ..."
    assert fact_question("Alice", "manager") == "What is the manager of Alice?"
    assert fact_sentence("Marisol", "reports to", "Dana") == "Marisol reports to Dana."
    assert "Who is the manager of X?" in relation_descriptions("manager")
    assert "Which city was the prime minister of X born in?" in chain_descriptions(["head of government"],
                                                                                   "place of birth")


@pytest.fixture(scope="module")
def relation_linker(embedder: Embedder) -> RelationLinker:
    return RelationLinker(embedder)


@pytest.mark.parametrize(("question", "entity", "held", "expected"), [
    ("Which side does Messi play for?", "Messi", ["member of sports team"], "member of sports team"),
    ("How old is Messi?", "Messi", ["member of sports team"], None),  # asks what the store lacks: age
    ("Where was Messi born?", "Messi", ["member of sports team"], None),
    ("Where does Jane live now?", "Jane", ["home city", "dentist"], "home city"),
    ("What passport does Laura hold?", "Laura", ["country of citizenship", "employer"], "country of citizenship"),
    ("Who is Carlos's dentist?", "Carlos", ["doctor"], None),  # the namespace holds "dentist" for someone else
])
def test_a_stored_relation_is_taken_only_when_it_is_what_the_question_asks(
        relation_linker: RelationLinker, question: str, entity: str, held: list[str], expected: str | None) -> None:
    start = question.index(entity)
    vector = relation_linker.encode_question(question, (start, start + len(entity)))[0]
    alternatives = relation_linker.alternatives(["dentist", "doctor", "home city"], held)
    scores = relation_linker.score(vector, [], [*held, *alternatives])
    assert relation_linker.choose(scores, held, alternatives) == expected
