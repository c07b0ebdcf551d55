"""Edit validation: every bad input is refused with an error that names the field and says what is allowed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from editagent.schema import (
    MAX_ENTITY_CHARS,
    MAX_RELATION_CHARS,
    MAX_SENTENCE_CHARS,
    NAMESPACE_RULE,
    Edit,
    EditError,
    SearchHit,
    check_namespace,
)

GOOD: dict[str, Any] = {"subject": "Doug TenNapel", "relation": "P27", "object": "United Kingdom"}


def make(**changes: Any) -> Edit:
    return Edit(**{**GOOD, **changes})


def refused(**changes: Any) -> str:
    """The message of the error that building an edit with ``changes`` raises (it must be a ValueError)."""
    with pytest.raises(ValueError) as caught:
        make(**changes)
    assert isinstance(caught.value, ValidationError | EditError)
    return str(caught.value)


# -- a good edit --------------------------------------------------------------------------------


def test_good_edit_is_cleaned_and_filled() -> None:
    edit = make(subject="  Doug TenNapel ", object=" United Kingdom\t")
    assert edit.subject == "Doug TenNapel"
    assert edit.object == "United Kingdom"
    assert edit.relation == "country of citizenship"
    assert edit.namespace == "default"
    assert edit.source == "user"
    assert edit.metadata == {}
    assert edit.created_at.tzinfo is not None and edit.created_at.utcoffset() == timedelta(0)
    assert len(edit.id) == 32 and edit.id != make().id


def test_edit_is_frozen() -> None:
    edit = make()
    with pytest.raises(ValidationError):
        edit.object = "Canada"  # type: ignore[misc]
    assert edit.object == "United Kingdom"


def test_unknown_field_is_refused() -> None:
    assert "colour" in refused(colour="red")


def test_created_at_is_converted_to_utc() -> None:
    naive = make(created_at=datetime(2024, 1, 2, 3, 4, 5))
    assert naive.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    aware = make(created_at=datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))))
    assert aware.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert aware.created_at.utcoffset() == timedelta(0)


def test_explicit_id_and_metadata_are_kept() -> None:
    edit = make(id="case_17-a", metadata={"case": 17, "tags": ["x", "y"], "nested": {"ok": True}})
    assert edit.id == "case_17-a"
    assert edit.metadata == {"case": 17, "tags": ["x", "y"], "nested": {"ok": True}}
    assert make(metadata=None).metadata == {}


# -- empty, control characters, length ---------------------------------------------------------


@pytest.mark.parametrize("field", ["subject", "relation", "object"])
@pytest.mark.parametrize("value", ["", "   ", "\t \n"])
def test_empty_text_is_refused(field: str, value: str) -> None:
    message = refused(**{field: value})
    assert f"{field}: must not be empty" in message


@pytest.mark.parametrize("field", ["subject", "relation", "object", "sentence", "previous_object", "source"])
@pytest.mark.parametrize("bad", ["\n", "\t", "\x00", "\u200b", "\r", "\u2028"])
def test_control_characters_are_refused(field: str, bad: str) -> None:
    message = refused(**{field: f"Doug{bad}TenNapel"})
    assert f"{field}: contains control characters" in message


@pytest.mark.parametrize(
    ("field", "limit"),
    [("subject", MAX_ENTITY_CHARS), ("object", MAX_ENTITY_CHARS), ("previous_object", MAX_ENTITY_CHARS),
     ("relation", MAX_RELATION_CHARS), ("sentence", MAX_SENTENCE_CHARS)],
)
def test_over_long_text_is_refused_with_the_limit(field: str, limit: int) -> None:
    assert (MAX_ENTITY_CHARS, MAX_RELATION_CHARS, MAX_SENTENCE_CHARS) == (200, 100, 1000)
    make(**{field: "x" * limit})  # exactly at the limit is fine
    message = refused(**{field: "x" * (limit + 1)})
    assert f"{field}: {limit + 1} characters, at most {limit} allowed" in message


# -- namespaces and ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["", "a b", "../x", "a/b", "ä", "n" * 65, "-lead", ".hidden", "_x", "abc\n"])
def test_bad_namespaces_are_refused(namespace: str) -> None:
    message = refused(namespace=namespace)
    assert "namespace:" in message
    assert NAMESPACE_RULE in message
    with pytest.raises(EditError, match="namespace"):
        check_namespace(namespace)


@pytest.mark.parametrize("namespace", ["a", "alice", "Team-1.dev_2", "0", "n" * 64])
def test_good_namespaces_are_accepted(namespace: str) -> None:
    assert make(namespace=namespace).namespace == namespace
    assert check_namespace(namespace) == namespace


@pytest.mark.parametrize("namespace", [None, 7, ["alice"]])
def test_non_text_namespace_is_refused(namespace: Any) -> None:
    assert "namespace:" in refused(namespace=namespace)


@pytest.mark.parametrize("bad_id", ["", "a b", "../x", "x" * 65, "id.1", "ä", "abc\n", 123, None])
def test_bad_ids_are_refused(bad_id: Any) -> None:
    message = refused(id=bad_id)
    assert "id:" in message
    assert "1-64 letters, digits" in message


# -- wrong types and metadata ---------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "type_name"),
                         [("subject", 42, "int"), ("object", 4.5, "float"), ("relation", ["P27"], "list"),
                          ("subject", None, "NoneType"), ("source", b"user", "bytes")])
def test_non_text_fields_are_refused(field: str, value: Any, type_name: str) -> None:
    assert f"{field}: expected text, got {type_name}" in refused(**{field: value})


@pytest.mark.parametrize(("metadata", "expected"), [
    (["a", "b"], "metadata: expected a JSON object (dict), got list"),
    ("{}", "metadata: expected a JSON object (dict), got str"),
    ({"tags": {"a", "b"}}, "metadata: must be JSON-serialisable"),
    ({"when": datetime(2024, 1, 1)}, "metadata: must be JSON-serialisable"),
    ({"score": math.nan}, "metadata: must be JSON-serialisable without NaN/Infinity"),
    ({"score": math.inf}, "metadata: must be JSON-serialisable without NaN/Infinity"),
    ({"blob": "x" * 17_000}, "metadata:"),
])
def test_bad_metadata_is_refused(metadata: Any, expected: str) -> None:
    assert expected in refused(metadata=metadata)


# -- the sentence ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "relation", "obj", "sentence"), [
    ("X", "P27", "Y", "X is a citizen of Y."),
    ("A", "works at", "B", "A works at B."),
    ("A", "is married to", "B", "A is married to B."),
    ("A", "favourite food", "B", "The favourite food of A is B."),
    ("Paris", "capital", "France", "The capital of Paris is France."),
])
def test_sentence_is_built_from_the_relation(subject: str, relation: str, obj: str, sentence: str) -> None:
    assert Edit(subject=subject, relation=relation, object=obj).sentence == sentence


@pytest.mark.parametrize("given", ["", "   ", None])
def test_blank_sentence_is_filled(given: Any) -> None:
    assert make(sentence=given).sentence == "Doug TenNapel is a citizen of United Kingdom."


def test_given_sentence_is_kept_stripped() -> None:
    assert make(sentence="  Doug holds a British passport. ").sentence == "Doug holds a British passport."


# -- relations and the supersession key -----------------------------------------------------------


@pytest.mark.parametrize("relation", ["P27", "p27", "citizenship", "Country of Citizenship",
                                      "  country   of citizenship ", "NATIONALITY"])
def test_relation_is_canonicalised(relation: str) -> None:
    assert make(relation=relation).relation == "country of citizenship"


def test_unknown_relation_keeps_its_wording_with_whitespace_normalised() -> None:
    assert make(relation="  Favourite   Food ").relation == "Favourite Food"


def test_key_is_case_insensitive() -> None:
    first = Edit(subject="Doug TenNapel", relation="P27", object="United Kingdom")
    second = Edit(subject="DOUG tennapel", relation="Citizenship", object="Canada")
    assert first.key == second.key == ("default", "doug tennapel", "country of citizenship")
    assert Edit(subject="A", relation="Works At", object="B").key == Edit(subject="a", relation="works at",
                                                                         object="C").key


def test_key_separates_namespaces_and_relations() -> None:
    assert make().key != make(namespace="alice").key
    assert make().key != make(relation="P19").key
    assert make().key != make(subject="Doug TenNapel Jr").key


# -- SearchHit ---------------------------------------------------------------------------------------


def test_search_hit_refuses_non_finite_scores() -> None:
    edit = make()
    hit = SearchHit(id=edit.id, memory=edit.sentence, score=0.5, edit=edit)
    assert (hit.id, hit.memory, hit.score, hit.status) == (edit.id, edit.sentence, 0.5, "live")
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="score"):
            SearchHit(id=edit.id, memory=edit.sentence, score=bad, edit=edit)
