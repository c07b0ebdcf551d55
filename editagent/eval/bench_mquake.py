"""``editagent bench mquake`` / ``python benchmarks/mquake.py``: wire a method to the MQuAKE runner."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editagent.decompose import ChainReasoner, MeLLo
from editagent.decompose.direct import answer_directly
from editagent.eval.mquake import MQuAKECase
from editagent.eval.runner import METHODS, PARAMETER_METHODS, RunConfig, command_line, fresh_dir, run
from editagent.llm import TransformersLLM
from editagent.memory import EditMemory
from editagent.models import load_embedder
from editagent.schema import Answer

logger = logging.getLogger(__name__)


def _default_data() -> str:
    folder = os.environ.get("EDITAGENT_DATA") or str(Path(__file__).resolve().parents[3] / "shared/data/mquake")
    return str(Path(folder) / "MQuAKE-CF-3k-dev600.json")


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON where it parses (numbers, lists), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--editor-option: expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="editagent bench mquake", description=__doc__)
    parser.add_argument("--dataset", default=_default_data(), help="MQuAKE JSON path or dataset name")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--k", default="all", help="cases whose edits share one memory: 1, 100, 1000 or all")
    parser.add_argument("--cases", type=int, default=120, help="cases to evaluate, balanced across hop counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--chunk", type=int, default=16, help="questions that advance together")
    parser.add_argument("--batch-size", type=int, default=8, help="LLM batch size")
    parser.add_argument("--editor-option", action="append", default=[], metavar="KEY=VALUE",
                        help="rome/memit: a config field, e.g. stats_tokens=30000 or layer=5 (repeatable)")
    parser.add_argument("--agent-option", action="append", default=[], metavar="KEY=VALUE",
                        help="agent: a ChainReasoner option, e.g. max_hops=4 (repeatable)")
    parser.add_argument("--conflicted", help="JSON list of case ids that conflict at k=all (reported apart)")
    args = parser.parse_args(argv)
    if args.k != "all":
        args.k = int(args.k)
    if args.conflicted is None:
        default = Path(args.dataset).parent / "dev600_conflicted_case_ids.json"
        args.conflicted = str(default) if default.exists() else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = RunConfig(dataset=args.dataset, method=args.method, model=args.model, k=args.k, n_cases=args.cases,
                       seed=args.seed, out=args.out, chunk=args.chunk, conflicted=args.conflicted,
                       command=command_line())
    llm = TransformersLLM.load(args.model, batch_size=args.batch_size)
    embedder = load_embedder()
    memory = EditMemory(fresh_dir(args.out.parent / ".work" / config.run_id), embedder=embedder)

    weight_edits: dict[str, list[Any]] = {}  # namespace -> its group's edits, for the parameter editors
    group_questions: dict[str, list[str]] = {}
    answered: dict[tuple[str, str], Answer] = {}

    def add_edits(cases: list[MQuAKECase], namespace: str) -> None:
        if args.method in PARAMETER_METHODS:
            from editagent.eval.editing import rewrite_to_edit  # noqa: PLC0415 - parameter editors only

            weight_edits[namespace] = [rewrite_to_edit(r) for case in cases for r in case.requested_rewrite]
            group_questions[namespace] = [q for case in cases for q in case.questions]
            return
        memory.add([edit for case in cases for edit in case.edits(namespace)], progress=True)

    def direct(questions: Sequence[str], method: str) -> list[Answer]:
        """The model answers each question itself, after MQuAKE's few-shot multi-hop prompt."""
        started = time.perf_counter()
        outputs = answer_directly(llm, questions)
        seconds = (time.perf_counter() - started) / len(questions)
        return [Answer(question=q, text=text, method=method, llm_calls=1, raw=raw, seconds=seconds)
                for q, (text, raw) in zip(questions, outputs, strict=True)]

    editor = None

    def edited(questions: Sequence[str], namespaces: Sequence[str]) -> list[Answer]:
        """Write each group's edits into the weights, answer all its questions, undo (as the MQuAKE baselines).

        A group's phrasings are answered in one go while its edits are in place; later phrasings come from
        that (the metric is the same), so each group is edited once.
        """
        nonlocal editor
        from editagent.editors import MEMIT, ROME  # noqa: PLC0415 - parameter editors only

        if editor is None:
            options = dict(_option(text) for text in args.editor_option)
            editor = (ROME if args.method == "rome" else MEMIT)(llm.model, llm.tokenizer, options)
        for namespace in dict.fromkeys(ns for q, ns in zip(questions, namespaces, strict=True)
                                       if (ns, q) not in answered):
            started = time.perf_counter()
            if args.method == "rome":  # one edit after another, as ROME is applied to several facts
                handles = [editor.apply([edit]) for edit in weight_edits[namespace]]
            else:
                handles = [editor.apply(weight_edits[namespace])]
            try:
                answers = direct(group_questions[namespace], args.method)
            finally:
                for handle in reversed(handles):
                    handle.undo()
            seconds = (time.perf_counter() - started) / len(answers)
            for question, answer in zip(group_questions[namespace], answers, strict=True):
                answer.seconds = seconds
                answered[(namespace, question)] = answer
        return [answered[(ns, q)] for q, ns in zip(questions, namespaces, strict=True)]

    def ask(questions: Sequence[str], namespaces: Sequence[str]) -> list[Answer]:
        if args.method == "no-edit":
            return direct(questions, "no-edit")
        if args.method in PARAMETER_METHODS:
            return edited(questions, namespaces)
        if args.method == "agent":
            options = dict(_option(text) for text in args.agent_option)
            return ChainReasoner(llm, memory, **options).answer_many(questions, namespaces)
        if args.method in ("mello", "mello-guided"):
            reasoner = MeLLo(llm, memory.top1, guided=args.method == "mello-guided")
            answers = reasoner.answer_many(questions, namespaces)
            for answer in answers:
                answer.method = args.method
            return answers
        from editagent.decompose import PokeMQA, threshold_scope  # noqa: PLC0415 - pokemqa only

        return PokeMQA(llm, threshold_scope(memory.top1)).answer_many(questions, namespaces)

    result = run(config, ask, add_edits)
    summary = result["summary"]
    logger.info("%s: multi-hop acc %.3f, hop acc %s, %.2f s/question", config.run_id, summary["multi_hop_acc"],
                summary["hop_acc"], summary["seconds_per_question"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
