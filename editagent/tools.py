"""EditAgent as tools for another LLM agent: OpenAI function-calling definitions and a dispatcher.

A tool call is untrusted input: a model wrote it, perhaps copying text from a web page or a user. So
the arguments are bounded before they are parsed, validated by the same rules as the Python API, and
every refusal is an ``EditError`` whose message names the argument, ready to hand back to the model
(``tool_message`` does that). Importing this module loads no model.

>>> from editagent.tools import TOOLS, dispatch
>>> client.chat.completions.create(model=..., messages=..., tools=TOOLS)
>>> dispatch(agent, response.choices[0].message.tool_calls[0])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from editagent.schema import (
    MAX_ALIASES,
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
    describe_validation_error,
)

if TYPE_CHECKING:
    from editagent.agent import EditAgent

logger = logging.getLogger(__name__)


class ToolError(EditError):
    """A malformed tool call: unknown tool, arguments that are not a JSON object, a bad or missing argument."""


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


# -- results: plain JSON -----------------------------------------------------------------------------------


def hit_row(hit: SearchHit) -> dict[str, Any]:
    return {"id": hit.id, "memory": hit.memory, "score": hit.score, "status": hit.status,
            "subject": hit.edit.subject, "relation": hit.edit.relation, "object": hit.edit.object}


def _run_edit(agent: EditAgent, args: EditArguments) -> dict[str, Any]:
    stored = agent.edit(args.subject, args.relation, args.object, sentence=args.sentence,
                        previous_object=args.previous_object, aliases=args.aliases, source="tool")
    return {"edit": stored.model_dump(mode="json")}


def _run_ask(agent: EditAgent, args: AskArguments) -> dict[str, Any]:
    # "raw" (the whole prompt continuation) is left out: a calling model needs the answer and the hops
    return agent.ask(args.question).model_dump(mode="json", exclude={"raw"})


def _run_forget(agent: EditAgent, args: ForgetArguments) -> dict[str, Any]:
    return {"edit": agent.forget(args.edit_id).model_dump(mode="json")}


def _run_search(agent: EditAgent, args: SearchArguments) -> dict[str, Any]:
    return {"hits": [hit_row(hit) for hit in agent.search(args.query, limit=args.limit)]}


# -- the tool table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[_Arguments]
    run: Callable[[EditAgent, Any], dict[str, Any]]

    def definition(self) -> dict[str, Any]:
        """The OpenAI function-calling definition: ``{"type": "function", "function": {...}}``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": _without_titles(self.arguments.model_json_schema())}}


def _without_titles(schema: Any) -> Any:
    """pydantic's schema minus its "title" keys, which only repeat the property names to the model."""
    if isinstance(schema, dict):
        return {key: _without_titles(value) for key, value in schema.items()
                if not (key == "title" and isinstance(value, str))}
    if isinstance(schema, list):
        return [_without_titles(value) for value in schema]
    return schema


_TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("edit", "Record that a fact changed: (subject, relation, new object). A newer edit on the same subject and "
         "relation replaces the older one. Returns the stored edit with its id.", EditArguments, _run_edit),
    Tool("ask", "Answer a question, multi-hop ones included, using the recorded edits. Returns the answer and "
         "every reasoning hop with the edit it used.", AskArguments, _run_ask),
    Tool("forget", "Delete a recorded edit by its id (it stays in the history).", ForgetArguments, _run_forget),
    Tool("search_edits", "Find recorded edits similar to a text, best first, with their ids and scores.",
         SearchArguments, _run_search),
)}

TOOLS: list[dict[str, Any]] = [tool.definition() for tool in _TOOLS.values()]
"""Pass as ``tools=`` to an OpenAI-compatible chat completion."""


# -- dispatch ---------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ToolError(f"arguments: {name} is not a JSON value (use a number or a string)")


def _unpack(tool_call: Any) -> tuple[str, Any]:
    """(name, arguments) of an OpenAI tool call: the raw dict, an SDK object, or ``{"name", "arguments"}``."""
    if hasattr(tool_call, "model_dump"):  # openai's ChatCompletionMessageToolCall and the like
        tool_call = tool_call.model_dump()
    if not isinstance(tool_call, Mapping):
        raise ToolError(f"tool_call: expected an object with 'function': {{'name', 'arguments'}}, "
                        f"got {type(tool_call).__name__}")
    function = tool_call.get("function", tool_call)
    if not isinstance(function, Mapping):
        raise ToolError(f"function: expected an object with 'name' and 'arguments', got {type(function).__name__}")
    name = function.get("name")
    if not isinstance(name, str):
        raise ToolError(f"name: expected the tool's name as text, got {type(name).__name__}")
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
    tool = _TOOLS.get(name)
    if tool is None:
        raise ToolError(f"name: unknown tool {name[:100]!r}; the tools are {', '.join(_TOOLS)}")
    arguments = parse_arguments(raw)
    try:
        return tool, tool.arguments.model_validate(arguments)
    except ValidationError as error:
        raise ToolError(describe_validation_error(error)) from None


def dispatch(agent: EditAgent, tool_call: Any) -> dict[str, Any]:
    """Run one tool call against ``agent``; a JSON-serialisable result.

    Raises ``ToolError`` for a malformed call and ``EditError`` for a refused operation (e.g. forgetting
    an id that this namespace does not have); both messages name the field.
    """
    tool, arguments = validate_call(tool_call)
    logger.debug("tool %s in namespace %s", tool.name, agent.namespace)
    return tool.run(agent, arguments)


def tool_message(agent: EditAgent, tool_call: Any) -> dict[str, Any]:
    """The ``{"role": "tool", ...}`` message for a call: its result, or ``{"error": ...}`` for the model to fix."""
    call_id = tool_call.get("id") if isinstance(tool_call, Mapping) else getattr(tool_call, "id", None)
    try:
        content: dict[str, Any] = dispatch(agent, tool_call)
    except EditError as error:
        content = {"error": str(error)}
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content, ensure_ascii=False)}
