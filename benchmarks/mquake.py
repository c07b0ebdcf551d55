"""MQuAKE multi-hop evaluation of one method: wires a reasoner (``editagent.decompose.methods``) or a weight editor
(``editagent.editors``) to the resumable runner (``editagent.eval.runner``). Example:

    python benchmarks/mquake.py --method mello --k all --cases 120 --seed 0

Methods: every reasoning method of ``REASONERS`` (the edits go into the memory, one namespace per edit group), and
every registered weight editor of short objects (``editagent.editors.registry.editor_methods``: ``rome``, ``memit``,
``ft-l``, ``kne``, ...: each group's edits are written into the weights, its questions answered by the plain model,
then undone).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from editagent.decompose.methods import REASONERS, Parts, PlainModel, build_reasoner
from editagent.editors.config import editor_config
from editagent.eval import CONFLICTED, MQUAKE_DEV, data_file
from editagent.eval.editing import rewrite_to_edit
from editagent.eval.host import command_line
from editagent.eval.mquake import MQuAKECase
from editagent.eval.runner import PARAMETER_METHODS, RunConfig, fresh_dir, merge_shards, run
from editagent.llm import TransformersLLM
from editagent.memory import EditMemory
from editagent.models import load_embedder
from editagent.schema import Answer
from editagent.scope import scope_model

logger = logging.getLogger("benchmarks.mquake")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    parser = argparse.ArgumentParser(prog="benchmarks/mquake.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="MQuAKE JSON path or dataset name (default: the dev cases, found by "
                                          "editagent.eval.data_file)")
    parser.add_argument("--method", choices=[*REASONERS, *PARAMETER_METHODS], required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--k", default="all", help="cases whose edits share one memory: 1, 100, 1000 or all")
    parser.add_argument("--cases", type=int, default=120, help="cases to evaluate, balanced across hop counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--chunk", type=int, default=16, help="questions that advance together")
    parser.add_argument("--batch-size", type=int, default=8, help="LLM batch size")
    parser.add_argument("--max-hops", type=int, help="most hops per question (default: the method's)")
    parser.add_argument("--scope", choices=["embedding", "trained"], default="embedding",
                        help="the scope detector of the agent's retrieval tier and of SERAC (trained: the cached "
                        "one, from `editagent scope train`)")
    parser.add_argument("--editor-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a weight editor's config field, e.g. stats_tokens=30000 or layer=5 (repeatable)")
    parser.add_argument("--conflicted", help="JSON list of case ids that conflict at k=all (reported apart; "
                                             "default: the dev cases' list when --dataset is left out)")
    parser.add_argument("--workers", type=int, default=1, help="shards run as Ray tasks, each with its own model "
                        "copy (pip install 'editagent[ray]'); the shards' checkpoints merge into the same report")
    parser.add_argument("--ray-address", help="a Ray cluster to join (default: a local Ray started for the run)")
    args = parser.parse_args(argv)
    if args.k != "all":
        args.k = int(args.k)
    if args.dataset is None:
        args.dataset = str(data_file(MQUAKE_DEV))
        args.conflicted = args.conflicted or str(data_file(CONFLICTED))
    return args


class MemoryRun:
    """A reasoning method over an edit memory: each group's edits go into its own namespace."""

    def __init__(self, llm: TransformersLLM, method: str, memory: EditMemory, max_hops: int | None,
                 scope: str = "embedding") -> None:
        parts = Parts(llm=lambda: llm, source=memory, scope=scope_model(scope),
                      **({"max_hops": max_hops} if max_hops else {}))
        self.memory = memory
        self.reasoner = build_reasoner(method, parts)

    def add_edits(self, cases: list[MQuAKECase], namespace: str) -> None:
        self.memory.add([edit for case in cases for edit in case.edits(namespace)], progress=True)

    def ask(self, questions: Sequence[str], namespaces: Sequence[str]) -> list[Answer]:
        return self.reasoner.answer_many(questions, namespaces)


# Editors made for one fact per call (ROME, GRACE's codebook entries, KN's neurons); the others write a group's
# edits together (MEMIT's batch, fine-tuning on all of them).
ONE_AT_A_TIME = ("rome", "grace", "kn")


class WeightRun:
    """A weight editor: each group's edits are written, all its questions answered by the plain model, then undone
    (as the MQuAKE paper's baselines). A group's later phrasings come from that one pass (the metric is the same)."""

    def __init__(self, llm: TransformersLLM, method: str, options: dict[str, Any]) -> None:
        from editagent.editors.registry import make_editor

        self.method = method
        self.editor = make_editor(llm.model, llm.tokenizer, editor_config(method, **options))
        self.plain = PlainModel(llm, method)
        self.edits: dict[str, list[Any]] = {}
        self.questions: dict[str, list[str]] = {}
        self.answered: dict[tuple[str, str], Answer] = {}

    def add_edits(self, cases: list[MQuAKECase], namespace: str) -> None:
        self.edits[namespace] = [rewrite_to_edit(r) for case in cases for r in case.requested_rewrite]
        self.questions[namespace] = [q for case in cases for q in case.questions]

    def ask(self, questions: Sequence[str], namespaces: Sequence[str]) -> list[Answer]:
        for namespace in dict.fromkeys(namespaces):
            if any((namespace, q) not in self.answered for q, ns in zip(questions, namespaces, strict=True)
                   if ns == namespace):
                self._answer_group(namespace)
        return [self.answered[(ns, q)] for q, ns in zip(questions, namespaces, strict=True)]

    def _answer_group(self, namespace: str) -> None:
        started = time.perf_counter()
        if self.method in ONE_AT_A_TIME:
            handles = [self.editor.apply([edit]) for edit in self.edits[namespace]]
        else:
            handles = [self.editor.apply(self.edits[namespace])]
        try:
            answers = self.plain.answer_many(self.questions[namespace])
        finally:
            for handle in reversed(handles):
                handle.undo()
        seconds = (time.perf_counter() - started) / len(answers)
        for question, answer in zip(self.questions[namespace], answers, strict=True):
            answer.seconds = seconds
            self.answered[(namespace, question)] = answer


def evaluate(args: argparse.Namespace, config: RunConfig) -> dict[str, Any]:
    """One process's run of ``config`` (the whole run, or one shard of it), with its own model and memory."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # a Ray worker's own log (main's call is not run there)
    llm = TransformersLLM.load(args.model, batch_size=args.batch_size)
    if args.method in PARAMETER_METHODS:
        method_run: MemoryRun | WeightRun = WeightRun(llm, args.method, dict(map(_option, args.editor_option)))
    else:
        shard = f".shard{config.shard[0]}" if config.shard else ""
        memory = EditMemory(fresh_dir(args.out.parent / ".work" / f"{config.run_id}{shard}"), embedder=load_embedder())
        method_run = MemoryRun(llm, args.method, memory, args.max_hops, args.scope)
    return run(config, method_run.ask, method_run.add_edits)["summary"]


def evaluate_sharded(args: argparse.Namespace, config: RunConfig) -> dict[str, Any]:
    """``args.workers`` shards as Ray tasks, their checkpoints merged, then the report of the whole run."""
    try:
        import ray
    except ImportError:
        raise SystemExit("--workers: needs Ray; pip install 'editagent[ray]'") from None
    ray.init(address=args.ray_address, num_cpus=None if args.ray_address else args.workers,
             include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    # benchmarks/ is no package: the workers get this module's code by value, not by an import they cannot do
    module = sys.modules.get(evaluate.__module__)
    if module is not None and module.__name__ != "__main__":
        ray.cloudpickle.register_pickle_by_value(module)
    try:
        shard_run = ray.remote(num_cpus=1)(evaluate)
        ray.get([shard_run.remote(args, replace(config, shard=(i, args.workers))) for i in range(args.workers)])
    finally:
        ray.shutdown()
    merge_shards(config, args.workers)

    def nothing_left(*_: Any) -> Any:
        raise RuntimeError("every case is in the merged checkpoint; nothing is left to ask")

    return run(config, nothing_left, nothing_left)["summary"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    config = RunConfig(dataset=args.dataset, method=args.method, model=args.model, k=args.k, n_cases=args.cases,
                       seed=args.seed, out=args.out, chunk=args.chunk, conflicted=args.conflicted,
                       command=command_line(), extra={"workers": args.workers})
    summary = evaluate_sharded(args, config) if args.workers > 1 else evaluate(args, config)
    logger.info("%s: multi-hop acc %.3f, hop acc %s, %.2f s/question", config.run_id, summary["multi_hop_acc"],
                summary["hop_acc"], summary["seconds_per_question"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
