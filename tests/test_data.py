"""The one data resolver: $EDITAGENT_DATA, else the cache, fetching and deriving upstream files once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from editagent.eval import (
    CONFLICTED,
    MQUAKE_DEV,
    SCOPE_PAIRS,
    DataUnavailable,
    conflicted_case_ids,
    data_file,
    load_mquake,
    mquake,
)
from editagent.eval import data as data_module

DEV_SHA256 = "fffb116584d7272653037573de1c076b3e74fc969003df578ea9c13b9effd78c"  # ../shared/data/mquake/SOURCES.md


def test_the_derivations_reproduce_the_shipped_dev_files(mquake_dir: Path) -> None:
    shipped = (mquake_dir / MQUAKE_DEV).read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == DEV_SHA256
    # MQuAKE-CF-3k's other cases (case ids not divisible by 5) would be dropped; the dev cases come out byte for byte.
    cases = json.loads(shipped)
    extra = {**cases[0], "case_id": cases[0]["case_id"] + 1}
    assert hashlib.sha256(data_module.dev_cases_json([extra, *reversed(cases)])).hexdigest() == DEV_SHA256
    shipped_conflicts = json.loads((mquake_dir / CONFLICTED).read_text())
    assert sorted(conflicted_case_ids(load_mquake(mquake_dir / MQUAKE_DEV))) == sorted(shipped_conflicts)


def test_the_environment_variable_is_read_first(mquake_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("EDITAGENT_DATA", str(mquake_dir))
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))
    assert data_file(MQUAKE_DEV) == mquake_dir / MQUAKE_DEV
    assert data_file(SCOPE_PAIRS) == mquake_dir / SCOPE_PAIRS


def test_offline_without_the_file_the_error_names_the_variable_and_nothing_is_left(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDITAGENT_DATA", raising=False)
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))

    def offline(url: str) -> bytes:
        raise ConnectionError(f"no network for {url}")

    monkeypatch.setattr(mquake, "_fetch", offline)
    for name in (MQUAKE_DEV, CONFLICTED, SCOPE_PAIRS, "MQuAKE-T.json"):
        with pytest.raises(DataUnavailable, match="EDITAGENT_DATA"):
            data_file(name)
    with pytest.raises(DataUnavailable, match="set EDITAGENT_DATA to a folder that holds it"):
        data_file("no-such-file.json")
    assert not any((tmp_path / "cache").rglob("*.json"))


def test_online_the_dev_cases_are_derived_once_into_the_cache(mquake_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """The download is stubbed (no network here): it serves the dev cases as if they were MQuAKE-CF-3k."""
    monkeypatch.delenv("EDITAGENT_DATA", raising=False)
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))
    served: list[str] = []

    def fetch(url: str) -> bytes:
        served.append(url)
        return (mquake_dir / MQUAKE_DEV).read_bytes()

    monkeypatch.setattr(mquake, "_fetch", fetch)
    path = data_file(MQUAKE_DEV)
    assert path.is_relative_to(tmp_path / "cache") and hashlib.sha256(path.read_bytes()).hexdigest() == DEV_SHA256
    assert data_file(CONFLICTED).read_text() == json.dumps(sorted(json.loads((mquake_dir / CONFLICTED).read_text())))
    assert data_file(MQUAKE_DEV) == path and len(served) == 1  # cached: fetched once
