"""EditAgent as tools for another LLM agent: one table of tools, written out for every API that calls tools.

Each tool is a pydantic model of its arguments and a function of an ``EditAgent``. From that one table come the
OpenAI Chat Completions definitions (``TOOLS``), the OpenAI Responses ones (``RESPONSES_TOOLS``), the Anthropic
ones (``ANTHROPIC_TOOLS``), the MCP server's tools (``editagent.mcp_server``) and LangChain's
(``editagent.integrations.langchain``). ``dispatch`` runs a call in any of those shapes; ``tool_message`` wraps
the result, or the error, as the reply that API expects.

A tool call is untrusted input: a model wrote it, perhaps copying text from a web page or a user. So
the arguments are bounded before they are parsed, validated by the same rules as the Python API, and
every refusal is a ``ToolError`` whose message names the argument, ready to hand back to the model.
Importing this module loads no model.

>>> from editagent.tools import TOOLS, dispatch
>>> client.chat.completions.create(model=..., messages=..., tools=TOOLS)
>>> dispatch(agent, response.choices[0].message.tool_calls[0])
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from editagent.schema import (
    MAX_ALIASES,
    MAX_HTTP_BATCH,
    MAX_SEARCH_HITS,
    MAX_TOOL_ARGUMENTS_CHARS,
    EditError,
    EditId,
    EntityText,
    OptionalEntityText,
    QuestionText,
    RelationText,
    SearchHit,
    SentenceText,
    describe_errors,
)

if TYPE_CHECKING:
    from editagent.agent import EditAgent

logger = logging.getLogger(__name__)


class ToolError(EditError):
    """A refused tool call: unknown tool, arguments that are not a JSON object, a bad or missing argument, or an
    operation the store refuses (e.g. forgetting an id this namespace does not have)."""


class NotFound(ToolError):
    """A call naming an edit or an entity this namespace does not have (HTTP answers 404)."""


MAX_LISTED = 1_000  # edits per list_edits call
MAX_GRAPH_RADIUS = 3


# -- arguments: one pydantic model per tool, which also writes the tool's JSON schema ------------------


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EditArguments(_Arguments):
    subject: EntityText = Field(description="The entity whose fact changed, e.g. 'Doug TenNapel'.")
    relation: RelationText = Field(description="The relation: a label ('country of citizenship'), an alias, a "
                                               "Wikidata id ('P27') or your own wording ('manager').")
    object: EntityText = Field(description="The new value, e.g. 'United Kingdom'.")
    sentence: SentenceText = Field("", description="Optional: the fact as one sentence (default: written from "
                                                   "the relation).")
    previous_object: OptionalEntityText = Field(None, description="Optional: the value this edit replaces.")
    aliases: list[EntityText] = Field([], max_length=MAX_ALIASES,
                                      description="Optional: other names of the subject, e.g. ['UK', 'Britain'].")


class AskArguments(_Arguments):
    question: QuestionText = Field(description="The question, on one line.")


class ForgetArguments(_Arguments):
    edit_id: EditId = Field(description="The id of the edit to delete.")


class SearchArguments(_Arguments):
    query: QuestionText = Field(description="What to look for, e.g. a question or a name.")
    limit: int = Field(5, ge=1, le=MAX_SEARCH_HITS, strict=True, description="How many edits to return at most.")


class EditManyArguments(_Arguments):
    edits: list[EditArguments] = Field(min_length=1, max_length=MAX_HTTP_BATCH,
                                       description="The facts that changed; all are stored, or none.")


class ListArguments(_Arguments):
    include_history: bool = Field(False, strict=True, description="Also list superseded and deleted edits.")
    limit: int = Field(100, ge=1, le=MAX_LISTED, strict=True, description="How many edits to return at most.")
    offset: int = Field(0, ge=0, strict=True, description="How many edits to skip first, oldest first.")


class EditIdArguments(_Arguments):
    edit_id: EditId = Field(description="The edit's id, as edit, search_edits or list_edits returned it.")


class GraphArguments(_Arguments):
    entity: EntityText = Field(description="The entity at the centre, e.g. 'Doug TenNapel'.")
    radius: int = Field(1, ge=1, le=MAX_GRAPH_RADIUS, strict=True,
                        description="How many facts away from the entity to reach, in either direction.")


# -- results: plain JSON -----------------------------------------------------------------------------------


class HitRow(BaseModel):
    """One search hit as a tool or the HTTP service returns it."""

    id: str = Field(description="The edit's id.")
    memory: str = Field(description="The edit's sentence.")
    score: float = Field(description="Cosine similarity to the query, at most 1.")
    status: str = Field(description="'live', 'superseded' or 'deleted'.")
    subject: str
    relation: str
    object: str


def hit_row(hit: SearchHit) -> HitRow:
    return HitRow(id=hit.id, memory=hit.memory, score=hit.score, status=hit.status, subject=hit.edit.subject,
                  relation=hit.edit.relation, object=hit.edit.object)


def _fields(args: EditArguments) -> dict[str, Any]:
    return {"subject": args.subject, "relation": args.relation, "object": args.object, "sentence": args.sentence,
            "previous_object": args.previous_object, "aliases": args.aliases, "source": "tool"}


def _run_edit(agent: EditAgent, args: EditArguments) -> dict[str, Any]:
    fields = _fields(args)
    stored = agent.edit(fields.pop("subject"), fields.pop("relation"), fields.pop("object"), **fields)
    return {"edit": stored.model_dump(mode="json")}


def _run_edit_many(agent: EditAgent, args: EditManyArguments) -> dict[str, Any]:
    return {"edits": [row.model_dump(mode="json") for row in agent.edit_many([_fields(e) for e in args.edits])]}


def _run_list(agent: EditAgent, args: ListArguments) -> dict[str, Any]:
    rows = agent.edits(include_history=args.include_history)
    return {"edits": [row.model_dump(mode="json") for row in rows[args.offset: args.offset + args.limit]],
            "total": len(rows)}


def own_edit(agent: EditAgent, edit_id: str, field: str = "edit_id") -> Any:
    """The namespace's edit with this id; ``NotFound`` naming ``field`` otherwise."""
    stored = agent.get(edit_id)
    if stored is None:
        raise NotFound(f"{field}: no edit {edit_id!r} in namespace {agent.namespace!r}")
    return stored


def _run_get(agent: EditAgent, args: EditIdArguments) -> dict[str, Any]:
    return {"edit": own_edit(agent, args.edit_id).model_dump(mode="json")}


def _run_history(agent: EditAgent, args: EditIdArguments) -> dict[str, Any]:
    own_edit(agent, args.edit_id)
    return {"edits": [row.model_dump(mode="json") for row in agent.history(args.edit_id)]}


def graph_json(agent: EditAgent, entity: str | None = None, radius: int = 1) -> dict[str, Any]:
    """The namespace's edit graph as node-link JSON (``EditGraph.to_json``): all of it, or ``entity``'s
    neighbourhood; ``NotFound`` for an entity the graph does not hold."""
    graph = agent.graph()
    if entity is not None:
        if entity not in graph:
            raise NotFound(f"entity: {entity!r} is in no edit of namespace {agent.namespace!r}")
        graph = graph.neighbourhood(entity, radius)
    return graph.to_json()


def _run_graph(agent: EditAgent, args: GraphArguments) -> dict[str, Any]:
    return graph_json(agent, args.entity, args.radius)


def _run_ask(agent: EditAgent, args: AskArguments) -> dict[str, Any]:
    # "raw" (the whole prompt continuation) is left out: a calling model needs the answer and the hops
    return agent.ask(args.question).model_dump(mode="json", exclude={"raw"})


def _run_forget(agent: EditAgent, args: ForgetArguments) -> dict[str, Any]:
    own_edit(agent, args.edit_id)
    return {"edit": agent.forget(args.edit_id).model_dump(mode="json")}


def _run_search(agent: EditAgent, args: SearchArguments) -> dict[str, Any]:
    return {"hits": [hit_row(hit).model_dump() for hit in agent.search(args.query, limit=args.limit)]}


# -- the tool table -------------------------------------------------------------------------------------------


ToolStyle = Literal["chat", "responses", "anthropic"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[_Arguments]
    run: Callable[[EditAgent, Any], dict[str, Any]]
    writes: bool = False  # changes the store: needs a write key over HTTP and MCP

    def schema(self) -> dict[str, Any]:
        """The arguments' JSON schema, self-contained (no ``$ref``) and without pydantic's titles."""
        return _plain(self.arguments.model_json_schema())

    def definition(self, style: ToolStyle = "chat") -> dict[str, Any]:
        """The tool as ``style``'s API takes it: OpenAI Chat Completions ``{"type": "function", "function":
        {...}}``, OpenAI Responses ``{"type": "function", "name", ...}`` or Anthropic ``{"name", "description",
        "input_schema"}``."""
        if style == "anthropic":
            return {"name": self.name, "description": self.description, "input_schema": self.schema()}
        function = {"name": self.name, "description": self.description, "parameters": self.schema()}
        if style == "responses":  # strict mode would make every argument required: these have defaults
            return {"type": "function", **function, "strict": False}
        return {"type": "function", "function": function}


def _plain(schema: Any, defs: Mapping[str, Any] | None = None) -> Any:
    """pydantic's schema with each ``$ref`` replaced by its definition (some APIs take no ``$defs``) and without
    its "title" keys, which only repeat the property names to the model."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs", {})
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _plain(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {key: _plain(value, defs) for key, value in schema.items()
                if key != "$defs" and not (key == "title" and isinstance(value, str))}
    if isinstance(schema, list):
        return [_plain(value, defs) for value in schema]
    return schema


TOOL_TABLE: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("edit", "Record that a fact changed: (subject, relation, new object). A newer edit on the same subject and "
         "relation replaces the older one. Returns the stored edit with its id.", EditArguments, _run_edit,
         writes=True),
    Tool("ask", "Answer a question, multi-hop ones included, using the recorded edits. Returns the answer and "
         "every reasoning hop with the edit it used.", AskArguments, _run_ask),
    Tool("forget", "Delete a recorded edit by its id (it stays in the history).", ForgetArguments, _run_forget,
         writes=True),
    Tool("search_edits", "Find recorded edits similar to a text, best first, with their ids and scores.",
         SearchArguments, _run_search),
    Tool("edit_many", "Record several changed facts at once: all of them are stored, or none. Returns the stored "
         "edits with their ids.", EditManyArguments, _run_edit_many, writes=True),
    Tool("list_edits", "List the recorded edits, oldest first, with their ids; 'total' counts them all.",
         ListArguments, _run_list),
    Tool("get_edit", "Read one recorded edit by its id.", EditIdArguments, _run_get),
    Tool("edit_history", "Every edit ever made on the same subject and relation as this one, oldest first: what "
         "the fact was before, and when it changed.", EditIdArguments, _run_history),
    Tool("graph", "The recorded facts around an entity as a graph: nodes (entities) and edges (edits), JSON "
         "node-link data.", GraphArguments, _run_graph),
)}
"""Every tool by name: its arguments' model, what it runs, whether it writes."""

TOOLS: list[dict[str, Any]] = [tool.definition() for tool in TOOL_TABLE.values()]
"""Pass as ``tools=`` to an OpenAI-compatible chat completion."""
RESPONSES_TOOLS: list[dict[str, Any]] = [tool.definition("responses") for tool in TOOL_TABLE.values()]
"""Pass as ``tools=`` to OpenAI's Responses API (``client.responses.create``)."""
ANTHROPIC_TOOLS: list[dict[str, Any]] = [tool.definition("anthropic") for tool in TOOL_TABLE.values()]
"""Pass as ``tools=`` to Anthropic's Messages API (``client.messages.create``)."""


# -- dispatch ---------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ToolError(f"arguments: {name} is not a JSON value (use a number or a string)")


def _as_mapping(tool_call: Any) -> Mapping[str, Any]:
    if hasattr(tool_call, "model_dump"):  # SDK objects: ChatCompletionMessageToolCall, ToolUseBlock and the like
        tool_call = tool_call.model_dump()
    if not isinstance(tool_call, Mapping):
        raise ToolError(f"tool_call: expected an object with 'function': {{'name', 'arguments'}}, "
                        f"got {type(tool_call).__name__}")
    return tool_call


def _unpack(tool_call: Any) -> tuple[str, Any]:
    """(name, arguments) of a tool call in any shape: OpenAI Chat Completions (``{"function": {"name",
    "arguments"}}``), OpenAI Responses (``{"type": "function_call", "name", "arguments"}``), Anthropic
    (``{"type": "tool_use", "name", "input"}``) or plain ``{"name", "arguments"}``; a dict or an SDK object."""
    tool_call = _as_mapping(tool_call)
    function = tool_call.get("function", tool_call)
    if not isinstance(function, Mapping):
        raise ToolError(f"function: expected an object with 'name' and 'arguments', got {type(function).__name__}")
    name = function.get("name")
    if not isinstance(name, str):
        raise ToolError(f"name: expected the tool's name as text, got {type(name).__name__}")
    if tool_call.get("type") == "tool_use":
        return name, function.get("input")
    return name, function.get("arguments")


def parse_arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments as a dict: from the JSON string a model sends, or already parsed."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        if len(raw) > MAX_TOOL_ARGUMENTS_CHARS:
            raise ToolError(f"arguments: {len(raw)} characters, at most {MAX_TOOL_ARGUMENTS_CHARS} allowed")
        try:
            raw = json.loads(raw or "{}", parse_constant=_reject_constant)
        except json.JSONDecodeError as error:
            raise ToolError(f"arguments: not valid JSON ({error})") from None
        except RecursionError:
            raise ToolError("arguments: nested too deeply") from None
    if not isinstance(raw, Mapping):
        raise ToolError(f"arguments: expected a JSON object, got {type(raw).__name__}")
    return dict(raw)


def validate_call(tool_call: Any) -> tuple[Tool, _Arguments]:
    """The tool a call names and its validated arguments; ``ToolError`` naming the field otherwise."""
    name, raw = _unpack(tool_call)
    tool = TOOL_TABLE.get(name)
    if tool is None:
        raise ToolError(f"name: unknown tool {name[:100]!r}; the tools are {', '.join(TOOL_TABLE)}")
    arguments = parse_arguments(raw)
    try:
        return tool, tool.arguments.model_validate(arguments)
    except ValidationError as error:
        raise ToolError(describe_arguments_error(error)) from None


def describe_arguments_error(error: ValidationError) -> str:
    """``describe_validation_error`` that says where a nested field is: ``edits[1].subject: must not be empty``."""
    parts = []
    for item in error.errors():
        *outer, last = tuple(item.get("loc", ())) or ("input",)
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in outer).lstrip(".")
        parts.append(describe_errors([{**item, "loc": (last,)}], prefix=f"{path}." if path else ""))
    return "; ".join(parts)


def run_tool(agent: EditAgent, tool: Tool, arguments: _Arguments) -> dict[str, Any]:
    """Run validated arguments; a refusal of the store (an ``EditError``) comes back as a ``ToolError``."""
    logger.debug("tool %s in namespace %s", tool.name, agent.namespace)
    try:
        return tool.run(agent, arguments)
    except ToolError:
        raise
    except EditError as error:
        raise ToolError(str(error)) from None


def dispatch(agent: EditAgent, tool_call: Any) -> dict[str, Any]:
    """Run one tool call against ``agent``; a JSON-serialisable result.

    Raises ``ToolError`` naming the field for a malformed call and for a refused operation (e.g. forgetting
    an id that this namespace does not have).
    """
    tool, arguments = validate_call(tool_call)
    return run_tool(agent, tool, arguments)


def _call_id(tool_call: Mapping[str, Any], key: str) -> str:
    call_id = tool_call.get(key)
    return call_id if isinstance(call_id, str) and call_id else f"call_{uuid.uuid4().hex}"


def tool_message(agent: EditAgent, tool_call: Any) -> dict[str, Any]:
    """The reply to one call, shaped for the API that made it, carrying the result or ``{"error": ...}`` for the
    model to fix: Chat Completions ``{"role": "tool", "tool_call_id", "content"}``, Responses
    ``{"type": "function_call_output", "call_id", "output"}``, Anthropic ``{"type": "tool_result", "tool_use_id",
    "content", "is_error"}``. A call without an id gets a fresh ``call_<uuid>``: the reply must name one."""
    shape = _as_mapping(tool_call) if isinstance(tool_call, Mapping) or hasattr(tool_call, "model_dump") else {}
    failed = False
    try:
        result: dict[str, Any] = dispatch(agent, tool_call)
    except EditError as error:
        result, failed = {"error": str(error)}, True
    content = json.dumps(result, ensure_ascii=False)
    if shape.get("type") == "tool_use":
        return {"type": "tool_result", "tool_use_id": _call_id(shape, "id"), "content": content, "is_error": failed}
    if shape.get("type") == "function_call":
        return {"type": "function_call_output", "call_id": _call_id(shape, "call_id"), "output": content}
    return {"role": "tool", "tool_call_id": _call_id(shape, "id"), "content": content}
