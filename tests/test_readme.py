"""Every code example in README.md runs, on the real packaged models, and says what the README says it says.

A Python block's `print(EXPR)  # -> EXPECTED` lines are checked after the block ran: `str(EXPR)` must be EXPECTED.
The command-line block runs line by line through the real `editagent` command (`<id>` is an edit's id from the
listing before it). Each block runs in a fresh folder with `./memory` there, as on a new machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXPECT = re.compile(r"^\s*print\((?P<expr>.+)\)\s*#\s*->\s*(?P<expected>.+?)\s*$")


def blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(README.read_text(encoding="utf-8")) if lang == language]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs_and_prints_what_the_readme_says(index: int, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code = blocks("python")[index]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDITAGENT_MEMORY", str(tmp_path / "memory"))
    checked, lines = 0, []
    for line in code.splitlines():  # each "print(EXPR)  # -> EXPECTED" becomes a check at that point of the block
        match = _EXPECT.match(line)
        if match:
            checked += 1
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}assert str({match['expr']}) == {match['expected']!r}, ({match['expr']!r}, {match['expr']})"
        lines.append(line)
    exec(compile("\n".join(lines), f"README.md python block {index + 1}", "exec"), {})
    assert checked or "ask(" not in code, "a README block that asks a question must say the answer (# -> ...)"


@pytest.mark.slow
def test_command_line_example_runs_with_the_real_command(tmp_path: Path) -> None:
    (body,) = [b for b in blocks("bash") if b.startswith("editagent edit add")]
    env = {**os.environ, "EDITAGENT_MEMORY": str(tmp_path / "memory")}
    command = [sys.executable, "-m", "editagent.cli"]
    last_listing: list[dict[str, Any]] = []
    for line in body.splitlines():
        args = shlex.split(line, comments=True)[1:]
        if "<id>" in args:
            args = [last_listing[0]["id"] if a == "<id>" else a for a in args]
        result = subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                                timeout=600, check=False)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        if args[:2] == ["edit", "list"]:
            last_listing = json.loads(result.stdout)
            assert [row["status"] for row in last_listing] == ["live", "live"]
        if args[0] == "ask":
            assert "Answer: United Kingdom" in result.stdout, result.stdout
    assert (tmp_path / "graph.png").stat().st_size > 0
