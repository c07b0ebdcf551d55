"""The MQuAKE loader on the 600 dev cases, on broken files, offline, and the answer matching."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import editagent.eval.mquake as mquake
from editagent.eval import MQuAKECase, load_mquake
from editagent.eval.mquake import (
    KNOWN_DATASETS,
    DatasetUnavailable,
    MQuAKEFormatError,
    RequestedRewrite,
    answer_matches,
    load_conflicted_case_ids,
    normalise_answer,
)
from editagent.schema import Edit

DEV_FILE = "MQuAKE-CF-3k-dev600.json"


@pytest.fixture(scope="module")
def dev_file(mquake_dir: Path) -> Path:
    return mquake_dir / DEV_FILE


@pytest.fixture(scope="module")
def cases(dev_file: Path) -> list[MQuAKECase]:
    return load_mquake(dev_file)


@pytest.fixture(scope="module")
def raw_case(dev_file: Path) -> dict[str, Any]:
    with dev_file.open(encoding="utf-8") as handle:
        return json.load(handle)[0]


def _write(tmp_path: Path, cases: list[Any]) -> Path:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases), encoding="utf-8")
    return path


# --- the dev set -------------------------------------------------------------------------------------------------


def test_loads_all_dev_cases(cases: list[MQuAKECase]) -> None:
    assert len(cases) == 600
    assert Counter(case.n_hops for case in cases) == {2: 200, 3: 200, 4: 200}
    assert all(case.case_id % 5 == 0 for case in cases)
    assert [case.case_id for case in cases] == sorted(case.case_id for case in cases)
    assert all(len(case.questions) == 3 and len(case.new_single_hops) == case.n_hops for case in cases)


def test_first_case_fields(cases: list[MQuAKECase]) -> None:
    case = cases[0]
    assert case.case_id == 5
    assert case.n_edits == 1
    rewrite = case.requested_rewrite[0]
    assert (rewrite.subject, rewrite.relation_id, rewrite.object_new, rewrite.object_true) == (
        "United Kingdom", "P30", "Asia", "Europe")
    assert rewrite.target_new.id == "Q48"
    assert case.new_answers == ["Asia", "Asian continent"]
    assert case.old_answers[0] == "Europe"
    assert case.orig.edit_triples == [("Q145", "P30", "Q48")]
    assert case.new_single_hops[-1].answers == ["Asia", "Asian continent"]


def test_every_edit_converts(cases: list[MQuAKECase]) -> None:
    count = 0
    for case in cases:
        for rewrite, edit in zip(case.requested_rewrite, case.edits("mquake-dev"), strict=True):
            assert isinstance(edit, Edit)
            assert edit.subject in edit.sentence and edit.object in edit.sentence
            assert edit.sentence == rewrite.prompt.format(rewrite.subject) + " " + rewrite.object_new + "."
            assert edit.previous_object == rewrite.object_true
            assert (edit.namespace, edit.source) == ("mquake-dev", "mquake")
            assert edit.metadata == {"case_id": case.case_id, "relation_id": rewrite.relation_id}
            assert not edit.relation.startswith("P")  # Wikidata ids canonicalise to labels
            count += 1
    assert count == sum(case.n_edits for case in cases)


def test_to_edit_canonicalises_relation(cases: list[MQuAKECase]) -> None:
    edit = cases[0].requested_rewrite[0].to_edit()
    assert (edit.relation, edit.namespace) == ("continent", "default")
    assert edit.sentence == "United Kingdom is located in the continent of Asia."


def test_limit(dev_file: Path) -> None:
    assert [case.case_id for case in load_mquake(dev_file, limit=3)] == [5, 10, 15]
    assert load_mquake(str(dev_file), limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_mquake(dev_file, limit=-1)


def test_conflicted_case_ids(mquake_dir: Path, cases: list[MQuAKECase]) -> None:
    conflicted = load_conflicted_case_ids(mquake_dir / "dev600_conflicted_case_ids.json")
    assert len(conflicted) == 140
    assert conflicted <= {case.case_id for case in cases}


def test_conflicted_case_ids_rejects_non_integers(tmp_path: Path) -> None:
    with pytest.raises(MQuAKEFormatError, match="integer case_ids"):
        load_conflicted_case_ids(_write(tmp_path, [1, "2"]))


# --- malformed files ---------------------------------------------------------------------------------------------


def test_unknown_keys_are_ignored(tmp_path: Path, raw_case: dict[str, Any]) -> None:
    case = copy.deepcopy(raw_case)
    case["added_upstream_later"] = 1
    case["requested_rewrite"][0]["also_new"] = "x"
    assert load_mquake(_write(tmp_path, [case]))[0].case_id == 5


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.pop("new_answer"), r"new_answer: Field required"),
        (lambda c: c.update(questions=[]), r"questions: "),
        (lambda c: c["new_single_hops"].pop(), r"new_single_hops has 1 hops but single_hops has 2"),
        (lambda c: c.update(single_hops=c["single_hops"][:1], new_single_hops=c["new_single_hops"][:1]),
         r"single_hops: .*1 hops; MQuAKE cases have 2 to 4"),
        (lambda c: c.update(case_id=0), r"case_id: "),
        (lambda c: c.update(case_id="7"), r"case_id: "),
        (lambda c: c["requested_rewrite"][0]["target_new"].pop("str"), r"requested_rewrite\[0\]\.target_new\.str"),
        (lambda c: c["requested_rewrite"][0].update(prompt="no placeholder"), r"requested_rewrite\[0\]\.prompt"),
    ],
)
def test_malformed_case_names_case_and_field(tmp_path: Path, raw_case: dict[str, Any], mutate: Any,
                                             expected: str) -> None:
    bad = copy.deepcopy(raw_case)
    mutate(bad)
    path = _write(tmp_path, [raw_case, bad])
    with pytest.raises(MQuAKEFormatError, match=rf"case #1 \(case_id .*\): .*{expected}"):
        load_mquake(path)


def test_not_a_list(tmp_path: Path) -> None:
    with pytest.raises(MQuAKEFormatError, match="JSON list"):
        load_mquake(_write(tmp_path, {"case_id": 1}))  # type: ignore[arg-type]


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(MQuAKEFormatError, match="not valid JSON"):
        load_mquake(path)


def test_rewrite_without_case_has_no_case_id(raw_case: dict[str, Any]) -> None:
    edit = RequestedRewrite.model_validate(raw_case["requested_rewrite"][0]).to_edit("ns")
    assert edit.metadata == {"relation_id": "P30"}


# --- names, cache and download -----------------------------------------------------------------------------------


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known names: MQuAKE-CF-3k, MQuAKE-CF-3k-v2, MQuAKE-CF, MQuAKE-T"):
        load_mquake("MQuAKE-XL", cache_dir=tmp_path)


def test_known_name_read_from_cache(tmp_path: Path, raw_case: dict[str, Any]) -> None:
    (tmp_path / "MQuAKE-T.json").write_text(json.dumps([raw_case]), encoding="utf-8")
    assert [case.case_id for case in load_mquake("MQuAKE-T", cache_dir=tmp_path)] == [5]


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   raw_case: dict[str, Any]) -> None:
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path))
    assert mquake.default_cache_dir() == tmp_path / "datasets"
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "MQuAKE-CF-3k-v2.json").write_text(json.dumps([raw_case]), encoding="utf-8")
    assert len(load_mquake("MQuAKE-CF-3k-v2.json")) == 1


def test_offline_download_raises_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mquake, "MQUAKE_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setattr(mquake, "DOWNLOAD_TIMEOUT_S", 5.0)
    with pytest.raises(DatasetUnavailable) as caught:
        load_mquake("MQuAKE-CF-3k", cache_dir=tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert "'MQuAKE-CF-3k'" in message
    assert "http://127.0.0.1:9/MQuAKE-CF-3k.json" in message
    assert "pass a local path instead" in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written in the cache


def test_download_writes_cache_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          raw_case: dict[str, Any]) -> None:
    payload = json.dumps([raw_case]).encode()
    fetched: list[str] = []

    def fake_fetch(url: str) -> bytes:
        fetched.append(url)
        return payload

    monkeypatch.setattr(mquake, "_fetch", fake_fetch)
    cache = tmp_path / "cache"
    assert [case.case_id for case in load_mquake("MQuAKE-CF", cache_dir=cache)] == [5]
    assert fetched == [mquake.dataset_url("MQuAKE-CF")]
    assert [p.name for p in cache.iterdir()] == ["MQuAKE-CF.json"]
    load_mquake("MQuAKE-CF", cache_dir=cache)
    assert len(fetched) == 1  # the second load reads the cache


def test_download_rejects_non_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mquake, "_fetch", lambda url: b"<html>rate limited</html>")
    with pytest.raises(DatasetUnavailable, match="did not return JSON"):
        load_mquake("MQuAKE-T", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_known_blob_hashes_are_well_formed() -> None:
    assert all(len(sha) == 40 and int(sha, 16) >= 0 for sha in KNOWN_DATASETS.values())
    assert mquake._git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


# --- answer matching ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The United Kingdom", "united kingdom"),
        ("  U.K.  ", "uk"),
        ("an Apple a day", "apple day"),
        ("Paris,   France!", "paris france"),
        ("Theatre", "theatre"),
        ("the", ""),
    ],
)
def test_normalise_answer(text: str, expected: str) -> None:
    assert normalise_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "answers", "mode", "expected"),
    [
        ("the United Kingdom", ["United Kingdom"], "exact", True),  # article
        ("Asia.", ["Asia"], "exact", True),  # punctuation
        ("ASIA", ["Asia"], "exact", True),  # case
        ("Asian continent", ["Asia", "Asian continent"], "exact", True),  # alias
        ("UK", ["United Kingdom", "U.K."], "exact", True),  # alias after punctuation is dropped
        ("Asia Minor", ["Asia"], "exact", False),
        ("It is in Asia.", ["Asia"], "exact", False),
        ("It is in Asia.", ["Asia"], "contains", True),
        ("Asian", ["Asia"], "contains", False),  # whole words only
        ("the answer is United Kingdom", ["United Kingdom"], "contains", True),
        ("", ["Asia"], "exact", False),
        ("...", ["!!!"], "exact", False),  # empty after normalising never matches
        ("anything", ["the"], "contains", False),
        (" Asia ", ["Asia"], "strict", True),  # MQuAKE's notebook: strip, then membership
        ("asia", ["Asia"], "strict", False),
        ("Asia.", ["Asia"], "strict", False),
    ],
)
def test_answer_matches(prediction: str, answers: list[str], mode: Any, expected: bool) -> None:
    assert answer_matches(prediction, answers, mode=mode) is expected


def test_answer_matches_default_is_exact() -> None:
    assert answer_matches("The Asian continent", ["Asian continent"])
    assert not answer_matches("in Asia", ["Asia"])


def test_answer_matches_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        answer_matches("Asia", ["Asia"], mode="fuzzy")  # type: ignore[arg-type]


def test_case_answers_match_their_own_gold(cases: list[MQuAKECase]) -> None:
    for case in cases:
        assert answer_matches(case.new_answer, case.new_answers)
        assert answer_matches(f"So the answer is {case.new_answer}.", case.new_answers, mode="contains")
