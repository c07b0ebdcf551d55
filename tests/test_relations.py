"""The relation table: every known relation reads well, and is found by id, label or alias."""

from __future__ import annotations

import pytest

from editagent.relations import (
    Relation,
    canonical_relation,
    fact_question,
    fact_sentence,
    find_relation,
    known_relations,
    mquake_relations,
)

RELATIONS = known_relations()


def test_table_is_populated_and_unambiguous() -> None:
    assert len(RELATIONS) >= 40
    names = [name.casefold() for r in RELATIONS for name in (r.label, r.wikidata_id, *r.aliases) if name]
    assert len(names) == len(set(names)), "a name maps to two relations"
    assert all(r.wikidata_id for r in mquake_relations())  # MQuAKE's edits name their relation by id
    ids = [r.wikidata_id for r in RELATIONS if r.wikidata_id]
    assert all(i.startswith("P") and i[1:].isdigit() for i in ids) and len(ids) >= len(RELATIONS) - 5


@pytest.mark.parametrize("relation", RELATIONS, ids=lambda r: r.label)
def test_sentence_and_question_contain_the_subject(relation: Relation) -> None:
    subject, obj = "Zorblax Quint", "Vemmering"
    sentence = fact_sentence(subject, relation.label, obj)
    question = fact_question(subject, relation.label)
    assert subject in sentence and obj in sentence
    assert sentence.endswith(".") and "{" not in sentence
    assert subject in question and obj not in question
    assert question.endswith("?") and "{" not in question
    if relation.wikidata_id:  # by id the same as by label
        assert fact_sentence(subject, relation.wikidata_id, obj) == sentence
        assert fact_question(subject, relation.wikidata_id) == question


@pytest.mark.parametrize("relation", RELATIONS, ids=lambda r: r.label)
def test_find_relation_by_id_label_and_alias(relation: Relation) -> None:
    assert find_relation(relation.label) is relation
    assert find_relation(relation.label.upper()) is relation
    assert find_relation(f"  {relation.label}  ") is relation
    if relation.wikidata_id is not None:
        assert find_relation(relation.wikidata_id) is relation
        assert find_relation(relation.wikidata_id.lower()) is relation
        assert canonical_relation(relation.wikidata_id) == relation.label
    for alias in relation.aliases:
        assert find_relation(alias) is relation
        assert find_relation(alias.title()) is relation
        assert canonical_relation(alias) == relation.label


def test_known_examples() -> None:
    assert find_relation("P27") is find_relation("nationality") is find_relation("Country of Citizenship")
    assert fact_sentence("X", "P27", "Y") == "X is a citizen of Y."
    assert fact_question("X", "P27") == "What is the country of citizenship of X?"
    assert fact_sentence("Paris", "capital city", "France") == "The capital of Paris is France."
    assert find_relation("ceo") is find_relation("P169")


@pytest.mark.parametrize("name", ["favourite food", "P99999", "works at", "", "   "])
def test_unknown_relations_are_not_found(name: str) -> None:
    assert find_relation(name) is None


def test_unknown_relations_get_generic_wording() -> None:
    assert canonical_relation("  favourite   food ") == "favourite food"
    assert fact_sentence("A", "favourite food", "B") == "The favourite food of A is B."
    assert fact_question("A", "favourite food") == "What is the favourite food of A?"
    assert fact_sentence("A", "works at", "B") == "A works at B."
    assert fact_question("A", "works at") == "A works at what?"
    assert fact_sentence("A", "lives in", "B") == "A lives in B."


@pytest.mark.parametrize(("relation", "sentence"), [
    ("located in", "Zentrix Labs is located in Rotterdam."),
    ("married to", "Zentrix Labs is married to Rotterdam."),
    ("is based in", "Zentrix Labs is based in Rotterdam."),
    ("reports to", "Zentrix Labs reports to Rotterdam."),
    ("works at", "Zentrix Labs works at Rotterdam."),
])
def test_a_relation_without_a_verb_of_its_own_reads_with_is(relation: str, sentence: str) -> None:
    assert fact_sentence("Zentrix Labs", relation, "Rotterdam") == sentence
