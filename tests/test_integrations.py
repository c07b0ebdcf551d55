"""editagent's tools inside LangChain: real StructuredTools over a real store, called as an agent would call them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")

from _scripted import ScriptedLLM
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool

from editagent import EditAgent
from editagent.integrations.langchain import editagent_tools
from editagent.memory import EditMemory
from editagent.models import Embedder
from editagent.tools import TOOL_TABLE, ToolError

FACT = {"subject": "Doug TenNapel", "relation": "P27", "object": "United Kingdom"}


@pytest.fixture
def tools(store_path: Path, embedder: Embedder) -> Iterator[dict[str, StructuredTool]]:
    with EditMemory(store_path, embedder=embedder) as memory:
        agent = EditAgent(namespace="alice", memory=memory, llm=ScriptedLLM())
        yield {tool.name: tool for tool in editagent_tools(agent)}


def test_tools_are_built_from_the_same_models(tools: dict[str, StructuredTool]) -> None:
    assert list(tools) == list(TOOL_TABLE)
    for name, tool in tools.items():
        assert tool.args_schema is TOOL_TABLE[name].arguments
        assert tool.description == TOOL_TABLE[name].description
    assert set(tools["edit"].args) == {"subject", "relation", "object", "sentence", "previous_object", "aliases",
                                       "source"}


def test_structured_tools_edit_ask_and_forget(tools: dict[str, StructuredTool]) -> None:
    stored = json.loads(tools["edit"].invoke(FACT))["edit"]
    assert (stored["namespace"], stored["relation"], stored["source"]) == ("alice", "country of citizenship", "tool")
    answer = json.loads(tools["ask"].invoke({"question": "Which country is Doug TenNapel a citizen of?"}))
    assert (answer["text"], answer["route"], answer["llm_calls"]) == ("United Kingdom", "memory", 0)
    hits = json.loads(tools["search_edits"].invoke({"query": "Doug TenNapel", "limit": 1}))["hits"]
    assert [hit["id"] for hit in hits] == [stored["id"]]
    graph = json.loads(tools["graph"].invoke({"entity": "Doug TenNapel"}))
    assert {node["id"] for node in graph["nodes"]} == {"doug tennapel", "united kingdom"}
    assert json.loads(tools["forget"].invoke({"edit_id": stored["id"]}))["edit"]["status"] == "deleted"
    assert json.loads(tools["list_edits"].invoke({}))["total"] == 0


def test_refusals_come_back_to_the_model_naming_the_field(tools: dict[str, StructuredTool]) -> None:
    assert tools["edit"].invoke({**FACT, "subject": ""}) == "subject: must not be empty"
    assert "namespace: unknown field" in tools["edit"].invoke({**FACT, "namespace": "bob"})
    assert tools["get_edit"].invoke({"edit_id": "nope"}) == "edit_id: no edit 'nope' in namespace 'alice'"
    assert "limit:" in tools["search_edits"].invoke({"query": "x", "limit": 0})
    # a tool call as a chat model's message carries it: the reply is a ToolMessage marked as an error
    message = tools["forget"].invoke({"type": "tool_call", "id": "call_1", "name": "forget",
                                      "args": {"edit_id": "nope"}})
    assert isinstance(message, ToolMessage)
    assert (message.tool_call_id, message.status) == ("call_1", "error") and "edit_id: no edit" in message.content


def test_unknown_tool_names_are_refused(store_path: Path, embedder: Embedder) -> None:
    with EditMemory(store_path, embedder=embedder) as memory, pytest.raises(ToolError, match="names: unknown tool"):
        editagent_tools(EditAgent(namespace="alice", memory=memory), names=["edit", "delete_everything"])
