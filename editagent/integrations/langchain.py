"""editagent's tools as LangChain ``StructuredTool``s, built from the same argument models as ``editagent.tools``.

>>> from editagent.integrations.langchain import editagent_tools
>>> tools = editagent_tools(EditAgent(namespace="alice"))        # bind them to a chat model, or call them:
>>> tools[0].invoke({"subject": "Alice", "relation": "manager", "object": "Bob Tanaka"})

Each tool returns the result as JSON text. A refused call (a bad argument, an unknown id) comes back as the error's
text, naming the field, for the model to fix, as the other tool faces do; it is not raised.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from editagent.tools import TOOL_TABLE, Tool, ToolError, describe_arguments_error, run_tool

try:
    from langchain_core.tools import StructuredTool, ToolException
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("editagent.integrations.langchain needs langchain-core: "
                      "pip install 'editagent[langchain]'") from error

if TYPE_CHECKING:
    from editagent.agent import EditAgent


def _runner(agent: EditAgent, tool: Tool) -> Any:
    def run(**arguments: Any) -> str:
        try:
            # LangChain validated the arguments with the same model; validating again keeps one code path
            return json.dumps(run_tool(agent, tool, tool.arguments.model_validate(arguments)), ensure_ascii=False)
        except ValidationError as error:
            raise ToolException(describe_arguments_error(error)) from None
        except ToolError as error:
            raise ToolException(str(error)) from None

    return run


def structured_tool(agent: EditAgent, tool: Tool) -> StructuredTool:
    return StructuredTool.from_function(
        func=_runner(agent, tool), name=tool.name, description=tool.description, args_schema=tool.arguments,
        handle_tool_error=True, handle_validation_error=describe_arguments_error)


def editagent_tools(agent: EditAgent, names: Iterable[str] | None = None) -> list[StructuredTool]:
    """LangChain tools over ``agent`` (its namespace): all of ``editagent.tools.TOOL_TABLE``, or those ``names``."""
    chosen = list(TOOL_TABLE) if names is None else list(names)
    unknown = [name for name in chosen if name not in TOOL_TABLE]
    if unknown:
        raise ToolError(f"names: unknown tool {unknown[0]!r}; the tools are {', '.join(TOOL_TABLE)}")
    return [structured_tool(agent, TOOL_TABLE[name]) for name in chosen]
