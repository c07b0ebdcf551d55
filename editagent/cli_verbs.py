"""The verbs of ``editagent.verbs`` as ``editagent`` commands: arguments read off each verb's model, the verb run,
its result printed as text or (``--json``) as the same JSON the tools and the HTTP service return.

A verb with ``cli`` words gets its command here: a required argument is positional, an optional one a ``--flag``
with the same name as on every other face (``--include-history``, ``--previous-object``); ``edit import`` takes a
JSONL file for ``edit_many``'s list.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any, get_origin

from editagent.schema import Answer, EditError, check_namespace
from editagent.verbs import VERBS, Verb

EXAMPLES = {  # one example per command, shown by --help
    "edit": 'editagent edit add "Doug TenNapel" P27 "United Kingdom" --alias Doug',
    "edit_many": "editagent edit import edits.jsonl   # one {\"subject\", \"relation\", \"object\"} per line",
    "list_edits": "editagent edit list --include-history --json",
    "forget": "editagent edit forget 5a6246cf747d4d8790590bc7b9dfac43",
    "get_edit": "editagent edit get 5a6246cf747d4d8790590bc7b9dfac43 --json",
    "edit_history": "editagent edit history 5a6246cf747d4d8790590bc7b9dfac43",
    "search_edits": 'editagent edit search "Which country is Doug TenNapel a citizen of?" --limit 3',
    "ask": 'editagent ask "Which country is the creator of Marge Simpson a citizen of?"',
}
LISTED_VERBS = ("list_edits", "search_edits")  # reads that refuse a namespace the store does not hold


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def add_verb_commands(groups: dict[str, Any], parents: list[argparse.ArgumentParser],
                      model: argparse.ArgumentParser, formatter: type[argparse.HelpFormatter], agent: Any) -> None:
    """One command per verb with ``cli`` words, under its group's subparsers (``groups["edit"]``) or at the top
    (``groups[""]``); ``agent(args, with_llm=, writes=)`` opens the agent a command runs in."""
    for verb in VERBS.values():
        if not verb.cli:
            continue
        group = groups[verb.cli[0] if len(verb.cli) > 1 else ""]
        command = group.add_parser(verb.cli[-1], parents=[*parents, *([model] if verb.name == "ask" else [])],
                                   help=verb.description.split(". ")[0].rstrip(".").lower(),
                                   description=verb.description, formatter_class=formatter,
                                   epilog=f"example: {EXAMPLES[verb.name]}" if verb.name in EXAMPLES else None)
        _add_arguments(command, verb)
        command.set_defaults(run=partial(run_verb, verb, agent=agent))


def _add_arguments(command: argparse.ArgumentParser, verb: Verb) -> None:
    if verb.name == "edit_many":
        command.add_argument("path", help='a JSONL file: one edit object per line, e.g. {"subject": "Alice", '
                             '"relation": "manager", "object": "Bob Tanaka"}')
        return
    for name, field in verb.arguments.model_fields.items():
        text = (field.description or "").removeprefix("Optional: ").replace("%", "%%")
        flag = "--" + name.replace("_", "-")
        kind = get_origin(field.annotation) or field.annotation
        if field.is_required():
            command.add_argument(name, help=text)
        elif field.annotation is bool:
            command.add_argument(flag, action="store_true", dest=name, help=text)
        elif field.annotation is int:
            command.add_argument(flag, type=int, default=field.default, dest=name, help=text)
        elif kind is list:
            singular = "--" + (name.removesuffix("es") if name.endswith("ses") else name.removesuffix("s"))
            command.add_argument(flag, singular, action="append", default=[], dest=name, help=f"{text} (repeatable)")
        else:  # its description says what leaving it out means
            command.add_argument(flag, default=argparse.SUPPRESS, dest=name, help=text)
    if verb.name == "ask":
        command.add_argument("--decomposer", choices=["rules", "llm", "auto"], default="rules",
                             help="how questions are read: rules, the model, or the model for what the rules leave")


def _jsonl(path: str) -> list[Any]:
    """The JSON value on each non-empty line of a file; an error names the line."""
    found = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                item = json.loads(line)
            except ValueError as error:
                raise EditError(f"{path}, line {number}: not valid JSON ({error})") from None
            found.append({"source": "cli", **item} if isinstance(item, dict) else item)
    return found


def _payload(verb: Verb, args: argparse.Namespace) -> dict[str, Any]:
    if verb.name == "edit_many":
        return {"edits": _jsonl(args.path)}
    payload = {name: getattr(args, name, None) for name in verb.arguments.model_fields}
    if "source" in payload and payload["source"] is None:
        payload["source"] = "cli"
    return {name: value for name, value in payload.items() if value is not None}


def run_verb(verb: Verb, args: argparse.Namespace, *, agent: Any) -> int:
    """Validate the command's arguments with the verb's model, run it in ``args.namespace`` and print the result."""
    from editagent.tools import describe_arguments_error, run_tool  # noqa: PLC0415

    check_namespace(args.namespace)
    try:
        arguments = verb.arguments.model_validate(_payload(verb, args))
    except ValueError as error:
        errors = getattr(error, "errors", None)
        raise EditError(describe_arguments_error(error) if callable(errors) else str(error)) from None  # type: ignore[arg-type]
    # only a verb that adds edits starts a store; forgetting in one that is not there is a typo
    with agent(args, with_llm=verb.name == "ask", writes=verb.effect == "write") as opened:
        if verb.name in LISTED_VERBS:
            _check_listed(opened, args.namespace)
        result = run_tool(opened, verb, arguments)
    show(verb, result, args.json, args.namespace)
    return 0


def _check_listed(agent: Any, namespace: str) -> None:
    """A namespace the store does not hold is most likely a typo: say so, and which ones it holds."""
    held = agent.memory.namespaces()
    if namespace not in held:
        names = ", ".join(map(repr, held)) if held else "none yet"
        raise EditError(f"namespace: {namespace!r} does not exist in this store; it holds {names}")


def show(verb: Verb, result: dict[str, Any], as_json: bool, namespace: str) -> None:
    if as_json:
        _print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    if verb.name == "ask":
        show_answer(Answer.model_validate(result))
    elif "edit" in result:
        row = result["edit"]
        _print(f"{row['id']}  {row['status']:<10}  {row['sentence']}")
    elif "hits" in result:
        for hit in result["hits"]:
            _print(f"{hit['score']:.3f}  {hit['id']}  {hit['memory']}")
        _print(f"{len(result['hits'])} hit(s) in namespace {namespace!r}")
    elif "edits" in result:
        for row in result["edits"]:
            _print(f"{row['id']}  {row['status']:<10}  {row['sentence']}")
        total = result.get("total", len(result["edits"]))
        _print(f"{len(result['edits'])} of {total} edit(s) in namespace {namespace!r}")


def show_answer(answer: Answer) -> None:
    _print(f"Question: {answer.question}")
    if answer.route:
        _print(f"Route: {answer.route}")
    for number, hop in enumerate(answer.trace, 1):
        _print(f"  hop {number}: {hop.subquestion}")
        if answer.method != "agent":  # MeLLo / PokeMQA: the model drafts, the memory checks
            _print(f"    draft answer:   {hop.draft_answer}")
        if hop.retrieved_edit_id:
            score = f", score {hop.retrieval_score:.3f}" if hop.retrieval_score is not None else ""
            _print(f"    edit:           {hop.retrieved_fact} [id {hop.retrieved_edit_id}{score}]")
        if answer.method != "agent":
            _print(f"    contradicts:    {'yes' if hop.contradicted else 'no'}")
        _print(f"    -> {hop.answer} (from {hop.source})")
    _print(f"Answer: {answer.text}" + (f"   [ended early: {answer.failure}]" if answer.failure else ""))
    _print(f"({answer.llm_calls} LLM calls, {answer.seconds:.1f} s)")


