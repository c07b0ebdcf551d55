"""The name keys and word lists every part of editagent compares names by (``editagent.names``, ``words``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from editagent.decompose.store_view import StoreView
from editagent.graph import EditGraph
from editagent.names import name_key, named_in, names_match, normalise_name, same_entity, text_key
from editagent.schema import Edit, StoredEdit


@pytest.mark.parametrize(("name", "key"), [
    ("The Beatles", "beatles"),  # a leading article
    ("the beatles", "beatles"),
    ("Beatles", "beatles"),
    ("THE  BEATLES ", "beatles"),  # case and whitespace
    ("J.K. Rowling", "j k rowling"),  # punctuation is a word break
    ("J. K. Rowling", "j k rowling"),
    ("Saint-Denis", "saint denis"),
    ("Theatre Royal", "theatre royal"),  # "the" only as a whole word
    ("Bank of the West", "bank of the west"),  # only a leading "the"
    ("The", "the"),  # nothing but an article or punctuation: its own text, not the empty key
    ("?", "?"),
])
def test_name_key(name: str, key: str) -> None:
    assert name_key(name) == key


def test_text_key_keeps_punctuation_and_articles() -> None:
    assert text_key("  Capital   City ") == "capital city"
    assert text_key("The Beatles") == "the beatles" != text_key("Beatles")


def test_normalise_name() -> None:
    cases = {
        "U.K.": "uk",  # abbreviation dots join the initials
        "J. K. Rowling": "jk rowling",
        "Malmö": "malmo",  # accents
        "The Hague": "hague",
        "The": "the",
        "Acme Corp.": "acme corp",
        "Alice's": "alice s",
    }
    assert {name: normalise_name(name) for name in cases} == cases


def test_looser_matches() -> None:
    assert same_entity("United States", "the United States of America")
    assert not same_entity("The", "the")  # a name of no words is no entity
    assert names_match("Malmö", "malmo") and not same_entity("Malmö", "malmo")
    assert named_in("Who runs the Falcon project?", ["Project Falcon"])
    assert named_in("Where does Alise live?", ["Alice"])
    assert not named_in("Where does Bob live?", ["Alice"])


def test_the_store_the_reasoner_and_the_graph_share_the_key() -> None:
    """What the store supersedes on is what the reasoner and the graph take for one entity."""
    older, newer = Edit(subject="The Beatles", relation="genre", object="rock"), \
        Edit(subject="Beatles", relation="genre", object="pop")
    assert older.key == newer.key
    assert Edit(subject="The Beatles", relation="genre", object="x").key != \
        Edit(subject="The Beatles", relation="genre", object="x", namespace="other").key
    view = StoreView.build([StoredEdit.of(older)])
    found = view.find("Beatles", "genre")
    assert found is not None and found.id == older.id
    assert [e.id for e in EditGraph.from_edits([older]).lookup("beatles", "genre")] == [older.id]


def test_the_name_module_imports_nothing_heavy() -> None:
    code = ("import sys, editagent.names, editagent.words, editagent.schema; "
            "print(sorted(m for m in ('numpy', 'torch', 'faiss', 'networkx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
