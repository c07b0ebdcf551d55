"""EditAgent as tools for another LLM agent: the verb table (``editagent.verbs``), written out for every API that
calls tools.

Each tool is a verb: a pydantic model of its arguments and a function of an ``EditAgent``. From that table come the
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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from editagent.schema import MAX_TOOL_ARGUMENTS_CHARS, EditError, describe_errors
from editagent.verbs import (  # noqa: F401 - the tools' models and errors, where callers have imported them from
    VERBS,
    AskArguments,
    EditArguments,
    EditIdArguments,
    EditManyArguments,
    ForgetArguments,
    GraphArguments,
    HitRow,
    ListArguments,
    NotFound,
    SearchArguments,
    ToolError,
    Verb,
    graph_json,
    hit_row,
    own_edit,
)

if TYPE_CHECKING:
    from editagent.agent import EditAgent

logger = logging.getLogger(__name__)

Tool = Verb
TOOL_TABLE: dict[str, Verb] = VERBS
"""Every tool by name: the verbs of ``editagent.verbs``, each with its arguments' model, what it runs, its effect."""
ToolStyle = Literal["chat", "responses", "anthropic"]


def definition(tool: Verb, style: ToolStyle = "chat") -> dict[str, Any]:
    """The tool as ``style``'s API takes it: OpenAI Chat Completions ``{"type": "function", "function": {...}}``,
    OpenAI Responses ``{"type": "function", "name", ...}`` or Anthropic ``{"name", "description",
    "input_schema"}``."""
    if style == "anthropic":
        return {"name": tool.name, "description": tool.description, "input_schema": tool.schema()}
    function = {"name": tool.name, "description": tool.description, "parameters": tool.schema()}
    if style == "responses":  # strict mode would make every argument required: these have defaults
        return {"type": "function", **function, "strict": False}
    return {"type": "function", "function": function}


TOOLS: list[dict[str, Any]] = [definition(tool) for tool in TOOL_TABLE.values()]
"""Pass as ``tools=`` to an OpenAI-compatible chat completion."""
RESPONSES_TOOLS: list[dict[str, Any]] = [definition(tool, "responses") for tool in TOOL_TABLE.values()]
"""Pass as ``tools=`` to OpenAI's Responses API (``client.responses.create``)."""
ANTHROPIC_TOOLS: list[dict[str, Any]] = [definition(tool, "anthropic") for tool in TOOL_TABLE.values()]
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


def validate_call(tool_call: Any) -> tuple[Verb, Any]:
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
        parts.append(describe_errors([{**item, "loc": (last,), "msg": _bound_wording(item)}],
                                     prefix=f"{path}." if path else ""))
    return "; ".join(parts)


_BOUNDS = {"less_than_equal": ("le", "at most"), "greater_than_equal": ("ge", "at least"),
           "too_short": ("min_length", "at least"), "too_long": ("max_length", "at most")}


def _bound_wording(item: Mapping[str, Any]) -> str:
    """A bound in the project's words ("must be at most 50"), not pydantic's, so every face says it alike."""
    key, words = _BOUNDS.get(item.get("type", ""), ("", ""))
    bound = item.get("ctx", {}).get(key) if key else None
    if bound is None:
        return str(item.get("msg", ""))
    unit = " item(s)" if item["type"] in ("too_short", "too_long") else ""
    return f"must be {words} {bound}{unit}"


def run_tool(agent: EditAgent, tool: Verb, arguments: Any) -> dict[str, Any]:
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
