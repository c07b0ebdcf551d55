"""The editagent command, through real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EDITAGENT = [sys.executable, "-m", "editagent.cli"]


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([*EDITAGENT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"editagent {args} failed ({result.returncode}):\n{result.stderr}")
    return result


def test_edit_add_list_forget_and_bad_input(tmp_path: Path) -> None:
    added = json.loads(run(["edit", "add", "Doug TenNapel", "P27", "United Kingdom", "--json"], tmp_path).stdout)
    assert added["relation"] == "country of citizenship"
    assert added["sentence"] == "Doug TenNapel is a citizen of United Kingdom."
    assert (tmp_path / "memory" / "default" / "edits.sqlite3").is_file()  # the default home of stores

    bad = run(["edit", "add", "", "P27", "France"], tmp_path, check=False)
    assert bad.returncode == 2 and "subject: must not be empty" in bad.stderr
    bad_ns = run(["edit", "add", "a", "b", "c", "--namespace", "../etc"], tmp_path, check=False)
    assert bad_ns.returncode == 2 and "namespace" in bad_ns.stderr

    listed = json.loads(run(["edit", "list", "--json"], tmp_path).stdout)
    assert [row["id"] for row in listed] == [added["id"]]  # the rejected edits wrote nothing
    assert json.loads(run(["edit", "list", "--json", "--namespace", "other"], tmp_path).stdout) == []

    forgotten = json.loads(run(["edit", "forget", added["id"], "--json"], tmp_path).stdout)
    assert forgotten["status"] == "deleted"
    assert json.loads(run(["edit", "list", "--json"], tmp_path).stdout) == []
    history = json.loads(run(["edit", "list", "--json", "--history"], tmp_path).stdout)
    assert [row["status"] for row in history] == ["deleted"]


def test_graph_export_json_graphml_png(tmp_path: Path) -> None:
    run(["edit", "add", "Marge Simpson", "creator", "Doug TenNapel", "--store", "g"], tmp_path)
    run(["edit", "add", "Doug TenNapel", "P27", "United Kingdom", "--store", "g"], tmp_path)
    for name in ("graph.json", "graph.graphml", "graph.png"):
        run(["graph", "export", str(tmp_path / name), "--store", "g", "--center", "Doug TenNapel"], tmp_path)
    data = json.loads((tmp_path / "graph.json").read_text())
    assert {edge["relation"] for edge in data["edges"]} == {"creator", "country of citizenship"}
    assert (tmp_path / "graph.graphml").read_text().startswith("<?xml")
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_ask_json_on_the_real_model(tmp_path: Path) -> None:
    run(["edit", "add", "Marge Simpson", "creator", "Doug TenNapel"], tmp_path)
    run(["edit", "add", "Doug TenNapel", "P27", "United Kingdom"], tmp_path)
    result = run(["ask", "Which country is the creator of Marge Simpson a citizen of?", "--json"], tmp_path)
    answer = json.loads(result.stdout)
    assert answer["question"] == "Which country is the creator of Marge Simpson a citizen of?"
    assert answer["trace"] and answer["trace"][0]["subquestion"]
    assert answer["trace"][0]["retrieved_edit_id"] is not None
    # Both hops are edits: the editagent method follows them through the store without asking the model.
    assert [hop["source"] for hop in answer["trace"]] == ["edit", "graph"]
    assert answer["text"] == "United Kingdom" and answer["route"] == "memory"
