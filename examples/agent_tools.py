"""An agent loop calling editagent's tools, with the model's side scripted.

``editagent.tools.TOOLS`` is what a chat model gets as ``tools=``; each tool call it emits goes through
``tool_message(agent, call)``, whose ``{"role": "tool", ...}`` reply is appended to the conversation. No
tool-calling chat model is available offline, so the calls below are written out as a model would send
them (OpenAI format: arguments as a JSON string). The last one is malformed on purpose: the reply is an
error naming the fields, for the model to fix. Runs offline, in a temporary store:

    python examples/agent_tools.py
"""

import json
import tempfile
from itertools import count

from editagent import EditAgent
from editagent.tools import TOOLS, tool_message

call_ids = count(1)


def model_call(name: str, **arguments: object) -> dict:
    """One tool call as a chat model's reply carries it (``message.tool_calls[i]``)."""
    return {"id": f"call_{next(call_ids)}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def turn(agent: EditAgent, messages: list[dict], *calls: dict) -> list[dict]:
    """One assistant turn: its tool calls, each answered by a tool message; returns the parsed results."""
    messages.append({"role": "assistant", "content": None, "tool_calls": list(calls)})
    results = []
    for call in calls:
        reply = tool_message(agent, call)
        messages.append(reply)
        print(f"model -> {call['function']['name']}({call['function']['arguments']})")
        print(f"tool  <- {reply['content']}")
        results.append(json.loads(reply["content"]))
    return results


print("tools:", ", ".join(tool["function"]["name"] for tool in TOOLS))

with tempfile.TemporaryDirectory() as store, EditAgent(store=store) as agent:
    messages = [{"role": "user", "content": "Marge Simpson was created by Doug TenNapel, who is British. "
                                            "Which country is her creator a citizen of?"}]
    # Everything passed to model_call below is what a tool-calling chat model would send.
    created = turn(agent, messages,
                   model_call("edit", subject="Marge Simpson", relation="creator", object="Doug TenNapel"),
                   model_call("edit", subject="Doug TenNapel", relation="P27", object="United Kingdom"))
    [answer] = turn(agent, messages,
                    model_call("ask", question="Which country is the creator of Marge Simpson a citizen of?"))
    print("answer:", answer["text"])
    turn(agent, messages, model_call("search_edits", query="Doug TenNapel", limit=2))
    turn(agent, messages, model_call("forget", edit_id=created[0]["edit"]["id"]))  # an id the model read
    # A malformed call: limit out of range and an argument the tool does not have.
    [error] = turn(agent, messages, model_call("search_edits", query="Doug TenNapel", limit=0, namespace="bob"))
    print("error for the model to fix:", error["error"])
    print(f"conversation: {len(messages)} messages; live edits left: {len(agent.edits())}")
