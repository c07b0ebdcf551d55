"""The ``editagent`` command: a thin face over EditAgent (parse, call, print)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editagent.schema import Answer, describe_errors

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


def _agent(args: argparse.Namespace, *, with_llm: bool = False) -> Any:
    from editagent.agent import EditAgent  # noqa: PLC0415 - keeps `editagent --help` instant

    return EditAgent(namespace=args.namespace, store=args.store, llm=args.model if with_llm else None,
                     decomposer=getattr(args, "decomposer", "rules"))


def _show_answer(answer: Answer, as_json: bool) -> None:
    if as_json:
        _print(answer.model_dump_json(indent=2))
        return
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


def cmd_edit_add(args: argparse.Namespace) -> int:
    with _agent(args) as agent:
        stored = agent.edit(args.subject, args.relation, args.object, previous_object=args.previous,
                            sentence=args.sentence or "", source=args.source, aliases=args.alias)
    _print(stored.model_dump_json() if args.json else f"stored {stored.id}: {stored.sentence}")
    return 0


def cmd_edit_list(args: argparse.Namespace) -> int:
    with _agent(args) as agent:
        rows = agent.edits(include_history=args.history)
    if args.json:
        _print(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    else:
        for row in rows:
            _print(f"{row.id}  {row.status:<10}  {row.sentence}")
        _print(f"{len(rows)} edit(s) in namespace {args.namespace!r}")
    return 0


def cmd_edit_forget(args: argparse.Namespace) -> int:
    with _agent(args) as agent:
        stored = agent.forget(args.id)
    _print(stored.model_dump_json() if args.json else f"forgot {stored.id}: {stored.sentence}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    with _agent(args, with_llm=True) as agent:
        answer = agent.ask(args.question)
    _show_answer(answer, args.json)
    return 0


def cmd_graph_export(args: argparse.Namespace) -> int:
    path = Path(args.path)
    fmt = args.format or path.suffix.lstrip(".").lower()
    with _agent(args) as agent:
        graph = agent.graph()
    if fmt == "json":
        graph.save_json(path)
    elif fmt == "graphml":
        graph.save_graphml(path)
    elif fmt == "png":
        graph.draw(path, center=args.center)
    else:
        raise ValueError(f"format: {fmt!r} is not supported; use json, graphml or png")
    _print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from editagent.server import serve  # noqa: PLC0415 - fastapi and uvicorn are an optional extra
    except ImportError as error:
        raise ValueError(f"serve: needs the server extra ({error.name} is missing); "
                         "pip install 'editagent[server]'") from None
    serve(args.store, host=args.host, port=args.port, llm=args.model)
    return 0


def cmd_scope_train(args: argparse.Namespace) -> int:
    from editagent.scope import load_or_train  # noqa: PLC0415 - loads torch

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
    with _agent(args, with_llm=True) as agent:
        for subject, relation, obj in case["edits"]:
            stored = agent.edit(subject, relation, obj, source="demo")
            _print(f"  edit: {stored.sentence}")
        _print("loading the language model and answering (a minute or two on a laptop CPU)...")
        answer = agent.ask(case["question"])
    _show_answer(answer, args.json)
    _print(f"Expected after the edits: {case['new_answer']}")
    return 0


def _common_options(default: str) -> argparse.ArgumentParser:
    # A fresh parent per default: argparse shares parent actions, so set_defaults would leak across commands.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default=default, help="whose edits (one per user or agent)")
    common.add_argument("--store", default=default, help="store name under ./memory, or a path")
    common.add_argument("--json", action="store_true", help="print JSON")
    return common


def _error_text(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):  # pydantic: "field: what is wrong" per field, without its boilerplate
        return describe_errors(errors())
    return str(error)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="editagent", description="Keep an LLM agent's knowledge up to date.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    common = _common_options("default")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default="smollm2-135m-instruct", help="registered name, folder or hub name")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="add, list or forget edits").add_subparsers(dest="edit", required=True)
    add = edit.add_parser("add", parents=[common], help="store a changed fact")
    add.add_argument("subject")
    add.add_argument("relation", help='a label ("country of citizenship"), alias or Wikidata id ("P27")')
    add.add_argument("object")
    add.add_argument("--previous", help="the object this edit replaces")
    add.add_argument("--alias", action="append", default=[], help="another name of the subject (repeatable)")
    add.add_argument("--sentence", help="retrieval sentence (default: from the relation's template)")
    add.add_argument("--source", default="cli")
    add.set_defaults(run=cmd_edit_add)
    listing = edit.add_parser("list", parents=[common], help="list edits")
    listing.add_argument("--history", action="store_true", help="include superseded and deleted edits")
    listing.set_defaults(run=cmd_edit_list)
    forget = edit.add_parser("forget", parents=[common], help="delete an edit (kept in history)")
    forget.add_argument("id")
    forget.set_defaults(run=cmd_edit_forget)

    ask = commands.add_parser("ask", parents=[common, model], help="answer a question using the edits")
    ask.add_argument("question")
    ask.add_argument("--decomposer", choices=["rules", "llm", "auto"], default="rules",
                     help="how questions are read: rules, the model, or the model for what the rules leave")
    ask.set_defaults(run=cmd_ask)

    graph = commands.add_parser("graph", help="the edit graph").add_subparsers(dest="graph", required=True)
    export = graph.add_parser("export", parents=[common], help="write the graph as JSON, GraphML or PNG")
    export.add_argument("path")
    export.add_argument("--format", choices=["json", "graphml", "png"], help="default: from the file suffix")
    export.add_argument("--center", help="entity at the centre of a PNG drawing")
    export.set_defaults(run=cmd_graph_export)

    serve = commands.add_parser("serve", parents=[model], help="serve every namespace of a store over HTTP")
    serve.add_argument("--store", default="default", help="store name under ./memory, or a path")
    serve.add_argument("--host", default="127.0.0.1", help="there is no authentication: keep it local or proxied")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_serve)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.run(args))
    except ValueError as error:  # EditError and pydantic's ValidationError: bad input, said plainly
        sys.stderr.write(f"editagent: error: {_error_text(error)}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
