"""Every code example in README.md runs, on the real packaged models, and says what the README says it says.

A Python block's `print(EXPR)  # -> EXPECTED` lines are checked after the block ran: `str(EXPR)` must be EXPECTED.
The command-line block runs line by line through the real `editagent` command (`<id>` is an edit's id from the
listing before it), the HTTP block through bash (with curl) against a real `editagent serve`, and the MCP
configuration's command is started and driven with the MCP SDK. Each block runs in a fresh folder with `./memory`
there, as on a new machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
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
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             request: pytest.FixtureRequest) -> None:
    code = blocks("python")[index]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDITAGENT_MEMORY", str(tmp_path / "memory"))
    if "DATABASE_URL" in code:  # the PostgreSQL example: a throwaway database stands for the user's
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_url"))
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
    (body,) = [b for b in blocks("bash") if b.startswith('editagent edit add "Marge Simpson"')]
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
            last_listing = json.loads(result.stdout)["edits"]
            assert [row["status"] for row in last_listing] == ["live", "live"]
        if args[0] == "ask":
            assert "Answer: United Kingdom" in result.stdout, result.stdout
    assert (tmp_path / "graph.png").stat().st_size > 0


def _json_documents(text: str) -> list[Any]:
    """The JSON objects curl printed, among the server's access log lines (uvicorn logs requests to stdout)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        try:
            document, at = decoder.raw_decode(text, at)
            found.append(document)
        except json.JSONDecodeError:
            at += 1
    return found


def test_http_example_runs_with_a_key(tmp_path: Path) -> None:
    """The HTTP block, run by bash as written; the harness only picks a free port, waits for the server to listen
    before the first curl, and stops the server at the end."""
    (body,) = [b for b in blocks("bash") if b.startswith("KEY=$(editagent keys create")]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for line in body.replace("8000", port).splitlines():
        lines.append(line)
        if line.startswith("editagent serve"):
            lines.append(f"for _ in $(seq 600); do curl -sf http://127.0.0.1:{port}/health >/dev/null && break; "
                         "sleep 0.5; done")
    env = {**os.environ, "EDITAGENT_MEMORY": str(tmp_path / "memory"), "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    added, answer = _json_documents(result.stdout)
    assert added["edits"][0]["object"] == "Bob Tanaka" and added["edits"][0]["namespace"] == "alice"
    assert (answer["text"], answer["route"], answer["llm_calls"]) == ("Bob Tanaka", "memory", 0)
    assert (tmp_path / "memory" / "team" / "edits.sqlite3").is_file()


def test_more_than_one_machine_example_runs_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """The block as written, by bash, on a throwaway database; the harness picks free ports and waits for each
    server to listen, then asks both hosts for the copied edit with the copied key."""
    (body,) = [b for b in blocks("bash") if "store copy" in b]
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(str(probe.getsockname()[1]))
    # a key made in the embedded store before the block: the copy takes it along, and both hosts accept it
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
             "KEY=$(editagent keys create --namespace alice --store team --quiet)"]
    for line in body.replace("8000", ports[0]).replace("8001", ports[1]).splitlines():
        lines.append(line)
        if line.startswith("editagent serve"):
            port = ports[0] if ports[0] in line else ports[1]
            lines.append(f"for _ in $(seq 600); do curl -sf http://127.0.0.1:{port}/health >/dev/null && break; "
                         "sleep 0.5; done")
    lines += [f"curl -sf http://127.0.0.1:{port}/alice/edits -H \"Authorization: Bearer $KEY\"" for port in ports]
    env = {**os.environ, "EDITAGENT_MEMORY": str(tmp_path / "memory"), "HF_HUB_OFFLINE": "1",
           "DATABASE_URL": postgres_url, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Answer: Bob Tanaka" in result.stdout, result.stdout[-2000:]
    assert "counts and checksums verified" in result.stdout
    listed = [doc for doc in _json_documents(result.stdout) if "edits" in doc]
    assert len(listed) == 2 and all([e["object"] for e in doc["edits"]] == ["Bob Tanaka"] for doc in listed)


def test_mcp_config_starts_the_server(tmp_path: Path) -> None:
    """The MCP configuration's exact command, started as a desktop host would, answers the SDK's client."""
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client, StdioServerParameters

    (config,) = [json.loads(b) for b in blocks("json") if "mcpServers" in b]
    server = config["mcpServers"]["editagent"]
    assert server["command"] == "editagent"
    args = list(server["args"])
    args[args.index("--store") + 1] = str(tmp_path / "store")  # the user's path, here a temporary one
    parameters = StdioServerParameters(command=str(Path(sys.executable).parent / server["command"]), args=args,
                                       env={**os.environ, "HF_HUB_OFFLINE": "1"})

    async def session() -> dict[str, Any]:
        async with Client(parameters, read_timeout_seconds=300) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert "edit" in names and "ask" in names
            reply = await client.call_tool("edit", {"subject": "Alice", "relation": "manager", "object": "Bob"})
            assert not reply.is_error, reply.content
            return reply.structured_content["edit"]

    stored = anyio.run(session)
    assert stored["namespace"] == args[args.index("--namespace") + 1] == "me"
