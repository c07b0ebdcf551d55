"""The MCP server: `editagent mcp` as a real subprocess, driven by the official SDK's client over stdio and over
streamable HTTP (with API keys)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

mcp = pytest.importorskip("mcp")
httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")  # what the SDK's HTTP client is built on

from _servers import env, free_port, new_key, running  # noqa: E402 - after the skips
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from editagent.service import NO_KEY  # noqa: E402
from editagent.tools import TOOL_TABLE  # noqa: E402

FACTS = [{"subject": "Marge Simpson", "relation": "creator", "object": "Doug TenNapel"},
         {"subject": "Doug TenNapel", "relation": "P27", "object": "United Kingdom"}]
QUESTION = "Which country is the creator of Marge Simpson a citizen of?"


def result(reply: Any) -> dict[str, Any]:
    assert not reply.is_error, reply.content
    parsed = json.loads(reply.content[0].text)
    assert parsed == reply.structured_content
    return parsed


def error(reply: Any) -> str:
    assert reply.is_error and reply.structured_content is None
    return str(reply.content[0].text)


async def edit_ask_forget(client: Client) -> dict[str, Any]:
    """The session every transport must carry: edits, a question answered from them, a refused call, forget."""
    stored = [result(await client.call_tool("edit", fact))["edit"] for fact in FACTS]
    answer = result(await client.call_tool("ask", {"question": QUESTION}))
    assert (answer["text"], answer["route"], answer["llm_calls"]) == ("United Kingdom", "memory", 0)
    assert answer["trace"][0]["retrieved_edit_id"] == stored[0]["id"]
    assert "subject: must not be empty" in error(await client.call_tool("edit", {**FACTS[0], "subject": ""}))
    assert "namespace: unknown field" in error(await client.call_tool("edit", {**FACTS[0], "namespace": "bob"}))
    assert "name: unknown tool 'nope'" in error(await client.call_tool("nope", {}))
    forgotten = result(await client.call_tool("forget", {"edit_id": stored[0]["id"]}))
    assert forgotten["edit"]["status"] == "deleted"
    assert "edit_id: no edit 'missing'" in error(await client.call_tool("forget", {"edit_id": "missing"}))
    listed = result(await client.call_tool("list_edits", {"include_history": True}))
    assert [(row["id"], row["status"]) for row in listed["edits"]] == [(stored[0]["id"], "deleted"),
                                                                       (stored[1]["id"], "live")]
    return {"stored": stored, "namespace": stored[0]["namespace"]}


def test_stdio_server_with_the_sdk_client(tmp_path: Path) -> None:
    store = tmp_path / "store"
    parameters = StdioServerParameters(command=sys.executable, env=env(), args=[
        "-m", "editagent.cli", "mcp", "--store", str(store), "--namespace", "alice"])

    async def session() -> dict[str, Any]:
        async with Client(parameters, read_timeout_seconds=300) as client:
            listed = await client.list_tools()
            assert [tool.name for tool in listed.tools] == list(TOOL_TABLE)
            for tool in listed.tools:  # the input schemas are the tools module's, one source of truth
                assert tool.input_schema == TOOL_TABLE[tool.name].schema()
                assert tool.annotations.read_only_hint == (not TOOL_TABLE[tool.name].writes)
                assert tool.annotations.destructive_hint == (TOOL_TABLE[tool.name].effect == "destructive")
                assert tool.output_schema == TOOL_TABLE[tool.name].output_schema()
            outcome = await edit_ask_forget(client)
            graph = result(await client.call_tool("graph", {"entity": "Doug TenNapel", "radius": 1}))
            assert {node["id"] for node in graph["nodes"]} == {"doug tennapel", "united kingdom"}
            assert "entity: 'Nobody' is in no edit" in error(await client.call_tool("graph", {"entity": "Nobody"}))
            return outcome

    outcome = anyio.run(session)
    assert outcome["namespace"] == "alice"  # the server's namespace, never a tool argument
    assert (store / "edits.sqlite3").is_file()


def _client(url: str, key: str | None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=300)),
                  read_timeout_seconds=300)


def _initialize(url: str, key: str | None) -> httpx.Response:
    """A raw initialize request: what an MCP client sends first."""
    headers = {"Accept": "application/json, text/event-stream", **({"Authorization": f"Bearer {key}"} if key else {})}
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    return httpx.post(url, json=body, headers=headers, timeout=60)


def test_streamable_http_server_with_keys(tmp_path: Path) -> None:
    store = tmp_path / "store"
    keys = {"alice": new_key(store, "alice"), "read": new_key(store, "alice", read_only=True),
            "carol": new_key(store, "carol"), "two": new_key(store, "alice", "carol")}
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    log = tmp_path / "mcp.log"
    with running(["mcp", "--http", "--port", str(port), "--store", str(store)], log, url):
        async def sessions() -> None:
            async with _client(url, keys["alice"]) as client:  # the key's own namespace
                assert (await edit_ask_forget(client))["namespace"] == "alice"
            async with _client(url, keys["read"]) as client:
                assert "read-only" in error(await client.call_tool("edit", FACTS[0]))
                question = "Which country is Doug TenNapel a citizen of?"  # the edit forget left
                answer = result(await client.call_tool("ask", {"question": question}))
                assert (answer["text"], answer["llm_calls"]) == ("United Kingdom", 0)
            async with _client(url, keys["carol"]) as client:  # carol's key sees carol's namespace only
                assert result(await client.call_tool("list_edits", {}))["total"] == 0
            async with _client(url, keys["two"]) as client:
                assert "holds 2 namespaces" in error(await client.call_tool("list_edits", {}))

        anyio.run(sessions)
        refused = _initialize(url, None)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json() == {"error": NO_KEY}  # the HTTP service's words and shape
        assert _initialize(url, "ea_000000000000_" + "z" * 43).status_code == 401
        assert _initialize(url, keys["alice"]).status_code == 200

        async def without_a_key() -> None:
            async with _client(url, None) as client:
                await client.list_tools()

        with pytest.raises(BaseExceptionGroup) as caught:  # the SDK's client gives up at the 401 (above)
            anyio.run(without_a_key)
        assert "Server returned an error response" in repr(caught.value.exceptions)
    text = log.read_text(errors="replace")
    assert "POST /mcp" in text
    for key in keys.values():
        assert key not in text and key.split("_", 2)[2] not in text


def test_streamable_http_server_for_one_namespace(tmp_path: Path) -> None:
    store = tmp_path / "store"
    keys = {"alice": new_key(store, "alice", "carol"), "carol": new_key(store, "carol")}
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with running(["mcp", "--http", "--port", str(port), "--store", str(store), "--namespace", "alice"],
                 tmp_path / "mcp.log", url):
        forbidden = _initialize(url, keys["carol"])  # a key without the server's namespace: 403
        assert forbidden.status_code == 403 and "insufficient_scope" in forbidden.headers["www-authenticate"]
        assert forbidden.json()["error"].startswith("authorization: ")

        async def session() -> None:
            async with _client(url, keys["alice"]) as client:  # two namespaces, the server's is used
                assert result(await client.call_tool("edit", FACTS[1]))["edit"]["namespace"] == "alice"

        anyio.run(session)


def test_insecure_http_says_so_and_lets_requests_in(store_path: Path, embedder: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from starlette.testclient import TestClient

    from editagent.mcp_server import http_app
    from editagent.memory import EditMemory
    from editagent.service import Service

    with EditMemory(store_path, embedder=embedder) as memory:
        with caplog.at_level("WARNING", logger="editagent.mcp_server"):
            app = http_app(Service(memory), keys=None)
        assert "authentication is OFF (--insecure-no-auth)" in caplog.text and "'default'" in caplog.text
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
            reply = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params},
                                headers={"Accept": "application/json, text/event-stream"})
            assert reply.status_code == 200, reply.text
