"""One sequence of writes through every face (Python, HTTP, MCP, the CLI) stores the same rows, on both backends.

Each face writes in its own namespace of one store: add, supersede, a batch that supersedes again, forget, then a
weight edit and a write that supersedes it. Only the Python API makes weight edits (no other face offers ``to``),
so that step is Python's for every face; the write that supersedes it goes through the face. The rows are compared
field by field, ids and times replaced by their places in the namespace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from _servers import editagent
from test_editors import TOKENIZER, assert_same_weights, rome_for, sharp_model, snapshot

from editagent import EditAgent
from editagent.llm import TransformersLLM
from editagent.memory import EditMemory
from editagent.models import Embedder

mcp = pytest.importorskip("mcp")
testclient = pytest.importorskip("fastapi.testclient")

ADD = {"subject": "Doug TenNapel", "relation": "P27", "object": "United States"}
SUPERSEDE = {**ADD, "object": "United Kingdom"}
BATCH = [{"subject": "Marge Simpson", "relation": "creator", "object": "Doug TenNapel"}, {**ADD, "object": "France"}]
WEIGHTS = {"subject": "Paris", "relation": "country", "object": "Japan"}
AFTER_WEIGHTS = {**WEIGHTS, "object": "Chile"}

# (subject, object, previous_object, status, superseded_by) of each row, oldest first, on every face
EXPECTED = [("Doug TenNapel", "United States", None, "superseded", "#1"),
            ("Doug TenNapel", "United Kingdom", "United States", "superseded", "#3"),
            ("Marge Simpson", "Doug TenNapel", None, "deleted", None),
            ("Doug TenNapel", "France", "United Kingdom", "live", None),
            ("Paris", "Japan", None, "superseded", "#5"),
            ("Paris", "Chile", "Japan", "live", None)]


class Weights:
    """A tiny random model with ROME: the Python API's weight edits, in any namespace of the store."""

    def __init__(self, memory: EditMemory, cache: Path) -> None:
        self.model = sharp_model("llama")
        self.llm = TransformersLLM(self.model, TOKENIZER, name="tiny-llama-sharp")
        self.editor = rome_for(self.model, cache)
        self.memory = memory

    def agent(self, namespace: str) -> EditAgent:
        return EditAgent(namespace=namespace, memory=self.memory, llm=self.llm, weight_editor=self.editor)

    def edit(self, namespace: str) -> None:
        self.agent(namespace).edit(WEIGHTS["subject"], WEIGHTS["relation"], WEIGHTS["object"], to="weights")


def rows(memory: EditMemory, namespace: str) -> list[dict[str, Any]]:
    """The namespace's rows, history included, with ids as '#place' and without times, namespace and source."""
    stored = memory.edits(namespace, include_history=True)
    place = {row.id: f"#{number}" for number, row in enumerate(stored)}
    found = []
    for row in stored:
        fields = row.model_dump(mode="json", exclude={"id", "namespace", "created_at", "ended_at", "source"})
        fields["superseded_by"] = place.get(row.superseded_by) if row.superseded_by else None
        if "weights" in fields["metadata"]:  # the file is named by the id, the fingerprint by the model's state
            fields["metadata"]["weights"] = {"method": fields["metadata"]["weights"]["method"]}
        found.append(fields)
    return found


def through_python(weights: Weights, namespace: str) -> None:
    agent = weights.agent(namespace)
    agent.edit(**ADD)
    agent.edit(**SUPERSEDE)
    marge = agent.edit_many(BATCH)[0]
    agent.forget(marge.id)
    before = snapshot(weights.model)
    agent.edit(WEIGHTS["subject"], WEIGHTS["relation"], WEIGHTS["object"], to="weights")
    assert len(agent.weight_edits()) == 1
    agent.edit_many([AFTER_WEIGHTS])  # a batch that supersedes a weight edit takes it out of the model
    assert agent.weight_edits() == []
    assert_same_weights(weights.model, before)


def through_http(memory: EditMemory, weights: Weights, namespace: str) -> None:
    from editagent.server import create_app

    with testclient.TestClient(create_app(memory=memory, auth=False)) as client:
        def post(body: Any) -> list[dict[str, Any]]:
            reply = client.post(f"/{namespace}/edits", json=body)
            assert reply.status_code == 201, reply.text
            return reply.json()["edits"]

        post(ADD)
        post(SUPERSEDE)
        marge = post(BATCH)[0]
        assert client.delete(f"/{namespace}/edits/{marge['id']}").status_code == 200
        weights.edit(namespace)
        post(AFTER_WEIGHTS)


def through_mcp(memory: EditMemory, weights: Weights, namespace: str) -> None:
    from editagent.mcp_server import build_server
    from editagent.service import Service

    async def session() -> None:
        async with mcp.Client(build_server(Service(memory), namespace=namespace)) as client:
            async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                reply = await client.call_tool(name, arguments)
                assert not reply.is_error, reply.content
                return dict(reply.structured_content or {})

            await call("edit", ADD)
            await call("edit", SUPERSEDE)
            marge = (await call("edit_many", {"edits": BATCH}))["edits"][0]
            await call("forget", {"edit_id": marge["id"]})
            await anyio.to_thread.run_sync(weights.edit, namespace)
            await call("edit", AFTER_WEIGHTS)

    anyio.run(session)


def through_cli(store: str | Path, weights: Weights, namespace: str, folder: Path) -> None:
    def run(*args: str) -> dict[str, Any]:
        return json.loads(editagent([*args, "--store", str(store), "--namespace", namespace, "--json"]).stdout)

    def add(fact: dict[str, str]) -> dict[str, Any]:
        return run("edit", "add", fact["subject"], fact["relation"], fact["object"])["edit"]

    add(ADD)
    add(SUPERSEDE)
    batch = folder / "batch.jsonl"
    batch.write_text("".join(json.dumps(fact) + "\n" for fact in BATCH))
    marge = run("edit", "import", str(batch))["edits"][0]
    run("edit", "forget", marge["id"])
    weights.edit(namespace)
    add(AFTER_WEIGHTS)


def test_one_sequence_of_writes_stores_the_same_rows_through_every_faces_write_path(
        store: str | Path, embedder: Embedder, tmp_path: Path) -> None:
    with EditMemory(store, embedder=embedder) as memory:
        weights = Weights(memory, tmp_path / "stats")
        through_python(weights, "python")
        through_http(memory, weights, "http")
        through_mcp(memory, weights, "mcp")
        through_cli(memory.store, weights, "cli", tmp_path)
        expected = rows(memory, "python")
        assert [(row["subject"], row["object"], row["previous_object"], row["status"], row["superseded_by"])
                for row in expected] == EXPECTED
        assert expected[4]["metadata"] == {"weights": {"method": "rome"}, "in_memory": False}
        for face in ("http", "mcp", "cli"):
            assert rows(memory, face) == expected, face


def _command(parser: Any, words: tuple[str, ...]) -> Any:
    import argparse

    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def test_http_routes_and_cli_commands_are_read_off_the_verb_table_faces(store_path: Path, embedder: Embedder) -> None:
    from editagent import cli, server
    from editagent.verbs import VERBS

    with EditMemory(store_path, embedder=embedder) as memory:
        app = server.create_app(memory=memory, auth=False)
    routes = {f"{method} {route.path}" for route in app.routes for method in getattr(route, "methods", ())
              if route.path.startswith("/{namespace}")}
    declared = {verb.http for verb in VERBS.values() if verb.http}
    assert declared <= routes and routes - declared == {"PUT /{namespace}/edits/{edit_id}"}
    parser = cli.build_parser()
    for verb in VERBS.values():
        if not verb.cli:
            continue
        command = _command(parser, verb.cli)
        options = {action.dest for action in command._actions} - {"help", "namespace", "store", "create", "json",
                                                                  "model", "decomposer", "path"}
        assert options == (set(verb.arguments.model_fields) - {"edits"}), verb.name  # the verb's own names
    for face in (cli, server):  # they reach the store through the verbs and the service
        assert "editagent.memory" not in Path(face.__file__).read_text(encoding="utf-8")
