"""Every script in examples/ runs as a real subprocess, offline, and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the examples load the real packaged models

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, tmp_path: Path, *args: str) -> str:
    """Run ``examples/<name>`` from the repository root; its stdout, after checking it exited with 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "EDITAGENT_MEMORY": str(tmp_path / "memory"), "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert not (tmp_path / "memory").exists(), f"{name} wrote into a named store"
    return result.stdout


def test_every_example_is_tested() -> None:
    tested = {"quickstart.py", "personal_assistant.py", "ripple_graph.py", "agent_tools.py", "parameter_edit.py"}
    assert {path.name for path in (ROOT / "examples").glob("*.py")} == tested
    readme = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    assert all(f"python examples/{name}" in readme for name in tested)


def test_quickstart(tmp_path: Path) -> None:
    out = run_example("quickstart.py", tmp_path)
    assert "answer:   United Kingdom   (route: memory)" in out
    assert re.search(r"hop 1 \[edit\] Who created Marge Simpson\? -> Doug TenNapel", out)
    assert re.search(r"hop 2 \[(edit|graph)\] .*Doug TenNapel.* -> United Kingdom", out)
    assert "Doug TenNapel is a citizen of United Kingdom." in out


def test_personal_assistant(tmp_path: Path) -> None:
    out = run_example("personal_assistant.py", tmp_path)
    alice, bob = out.split("== bob")
    assert "== alice" in alice
    for section, own, other in ((alice, ("Acme Robotics", "Berlin"), ("Globex", "Lisbon")),
                                (bob, ("Globex Shipping", "Lisbon"), ("Acme", "Berlin"))):
        user = "alice" if section is alice else "bob"
        assert f"Who is the employer of Sam Carter? => {own[0]}" in section
        assert f"Where are the headquarters of Sam Carter's employer? => {own[1]}" in section
        searches = [line for line in section.splitlines() if line.startswith("search ")]
        assert len(searches) == 2 and all(f"(namespace {user}," in line for line in searches)
        assert not any(name in section for name in other)  # never sees the other user's facts


def test_ripple_graph(tmp_path: Path) -> None:
    png = tmp_path / "out" / "ripple.png"
    out = run_example("ripple_graph.py", tmp_path, str(png))
    assert "13 chains change:" in out
    assert ("through     Marge Simpson --creator--> Doug TenNapel; Doug TenNapel --country of citizenship--> "
            "United Kingdom; United Kingdom --capital--> London") in out
    assert ("invalidated Doug TenNapel --country of citizenship--> United States of America; "
            "United States of America --capital--> Washington, D.C.") in out
    assert {line.split()[0] for line in out.splitlines() if line.startswith("  ")} == {
        "forward", "backward", "through", "invalidated"}
    assert f"png: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_agent_tools(tmp_path: Path) -> None:
    out = run_example("agent_tools.py", tmp_path)
    assert "tools: edit, ask, forget, search_edits" in out
    assert "answer: United Kingdom" in out
    assert out.count("model -> ") == out.count("tool  <- ") == 6
    assert '"status": "deleted"' in out  # the forget call
    error = next(line for line in out.splitlines() if line.startswith("error for the model to fix:"))
    assert "limit:" in error and "namespace: unknown field" in error
    assert "conversation: 12 messages; live edits left: 1" in out


def test_parameter_edit(tmp_path: Path) -> None:
    out = run_example("parameter_edit.py", tmp_path)
    rows = {line[:12].strip(): line[12:].split() for line in out.splitlines() if line.startswith(("before", "after"))}
    assert rows["before edit"][0] == "Paris," and rows["after edit"][0] == "Rome,"
    assert rows["after undo"] == rows["before edit"]
    assert rows["after edit"][-2:] == rows["before edit"][-2:]  # the unrelated prompt did not move
    assert "weights restored bit for bit: True" in out
