"""Ripple and locality of the editagent method (or another reasoner over the memory: IKE, SERAC, MeLLo, PokeMQA)
on MQuAKE dev cases, all edits in one memory (k=all).

From the edit graph of the stored edits, every question is sorted into:
- *should change*: its (subject, relation) is a live edit (single-hop), or its chain passes through one
  (the multi-hop questions, first phrasing): changed as expected = the agent gives the new answer;
- *should not change*: single-hop questions whose (subject, relation) no edit touches: unchanged as
  expected = the agent's answer equals the plain model's (the no-edit prompt). That agreement is the
  locality figure of issue 5 (`locality.json`).

    python benchmarks/ripple.py --cases 150 --seed 0
    python benchmarks/ripple.py --cases 150 --seed 0 --method ike --locality-only   # -> locality_ike.json

The agent's files are ``ripple.{json,md}`` and ``locality.json``; another method's carry its name.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from editagent import EditAgent
from editagent.decompose import answer_directly
from editagent.decompose.methods import REASONERS, Parts, build_reasoner
from editagent.eval import MQUAKE_DEV, data_file
from editagent.eval.host import command_line
from editagent.eval.mquake import answer_matches, load_mquake
from editagent.eval.runner import fresh_dir, rate, select_cases
from editagent.graph import EditGraph
from editagent.llm import TransformersLLM
from editagent.memory import EditMemory
from editagent.models import load_embedder
from editagent.relations import canonical_relation
from editagent.scope import scope_model

logger = logging.getLogger("ripple")
NAMESPACE = "all"
EMPTY = "no-edits"  # a namespace nothing is stored in


def collect(cases: list[Any], graph: EditGraph) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(questions that should change, single-hop questions that should not), each with its gold data."""
    change: list[dict[str, Any]] = []
    keep: dict[str, dict[str, Any]] = {}
    for case in cases:
        chain = case.orig.new_triples_labeled or case.orig.triples_labeled
        ids = case.orig.new_triples or case.orig.triples
        edited_positions = []
        for position, ((subject, _, _), (_, relation_id, _)) in enumerate(zip(chain, ids, strict=True)):
            live = graph.lookup(subject, canonical_relation(relation_id), NAMESPACE)
            hop = case.new_single_hops[position]
            if live:
                edited_positions.append(position)
                change.append({"kind": "single-hop", "case_id": case.case_id, "question": hop.question,
                               "expected": [live[0].object, *hop.answers]})
            else:
                keep.setdefault(hop.question, {"kind": "single-hop", "case_id": case.case_id,
                                               "question": hop.question})
        for position, hop in enumerate(case.single_hops):  # the pre-edit chain's hops that no edit touches
            subject, relation_id = case.orig.triples_labeled[position][0], case.orig.triples[position][1]
            if not graph.lookup(subject, canonical_relation(relation_id), NAMESPACE):
                keep.setdefault(hop.question, {"kind": "single-hop", "case_id": case.case_id,
                                               "question": hop.question})
        if edited_positions:
            change.append({"kind": "multi-hop", "case_id": case.case_id, "question": case.questions[0],
                           "expected": case.new_answers})
    return change, list(keep.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="MQuAKE JSON (default: the dev cases)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--cases", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--method", choices=[m for m in REASONERS if m != "no-edit"], default="agent",
                        help="who answers over the memory (default: the editagent method)")
    parser.add_argument("--scope", choices=["embedding", "trained"], default="embedding",
                        help="SERAC's scope detector (trained: the cached one)")
    parser.add_argument("--locality-only", action="store_true",
                        help="ask only the questions no edit touches (the locality figure)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    every_case = load_mquake(args.dataset or data_file(MQUAKE_DEV))
    cases = select_cases(every_case, args.cases, args.seed)
    llm = TransformersLLM.load(args.model, batch_size=8)
    memory = EditMemory(fresh_dir(args.out.parent / ".work" / f"ripple_{args.method}"), embedder=load_embedder())
    memory.add([edit for case in every_case for edit in case.edits(NAMESPACE)], progress=True)
    agent = EditAgent(namespace=NAMESPACE, memory=memory, llm=llm)
    change, keep = collect(cases, agent.graph(include_history=False))
    if args.locality_only:
        change = []
    logger.info("%d questions should change, %d single-hop questions should not", len(change), len(keep))
    reasoner = None
    if args.method != "agent":
        reasoner = build_reasoner(args.method, Parts(llm=lambda: llm, source=memory, scope=scope_model(args.scope)))

    def ask(questions: list[str], namespace: str) -> list[Any]:
        answers: list[Any] = []
        for start in range(0, len(questions), 32):
            batch = questions[start: start + 32]
            answers += (agent.ask_many(batch) if reasoner is None
                        else reasoner.answer_many(batch, [namespace] * len(batch)))
            logger.info("asked %d/%d", len(answers), len(questions))
        return answers

    answers = ask([q["question"] for q in change + keep], NAMESPACE)
    # The unedited answer: the plain model's for the agent (what it routes unedited questions to); for another
    # reasoner its own answer over an empty namespace, since its prompt (IKE's demonstrations, say) is its own.
    unedited = [q["question"] for q in keep]
    plain = ([text for text, _ in answer_directly(llm, unedited)] if reasoner is None
             else [answer.text for answer in ask(unedited, EMPTY)])
    for record, answer in zip(change + keep, answers, strict=True):
        record.update(answer=answer.text, route=answer.route, sources=[hop.source for hop in answer.trace])
    for record in change:
        record["as_expected"] = answer_matches(record["answer"], record["expected"])
    for record, text in zip(keep, plain, strict=True):
        record["plain"] = text
        record["as_expected"] = record["answer"] == text

    def expected(rows: list[dict[str, Any]]) -> float | None:
        return rate([r["as_expected"] for r in rows])

    command = command_line()
    single_change = [r for r in change if r["kind"] == "single-hop"]
    multi_change = [r for r in change if r["kind"] == "multi-hop"]
    summary = {"model": args.model, "method": args.method, "n_cases": len(cases), "seed": args.seed, "k": "all",
               "should_change_single_hop": len(single_change),
               "changed_as_expected_single_hop": expected(single_change),
               "should_change_multi_hop": len(multi_change), "changed_as_expected_multi_hop": expected(multi_change),
               "should_not_change": len(keep), "unchanged_as_expected": expected(keep),
               "routed_to_model_when_unedited": (rate([r["route"] == "model" for r in keep])
                                                 if args.method == "agent" else None),
               "wall_seconds": round(time.time() - started, 1), "command": command}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.method == "agent" else f"_{args.method}"
    locality = {"model": args.model, "n": len(keep), "agreement": expected(keep), "method": args.method,
                "what": "single-hop MQuAKE questions about facts no edit touches (k=all memory): "
                        f"{args.method}'s answer == " + ("the plain model's answer" if reasoner is None else
                                                          f"{args.method}'s answer with no edit stored"),
                "command": command}
    (args.out / f"locality{suffix}.json").write_text(json.dumps(locality, indent=1))
    if args.locality_only:
        logger.info("%s", json.dumps(locality))
        return 0
    (args.out / f"ripple{suffix}.json").write_text(json.dumps({"summary": summary, "should_change": change,
                                                               "should_not_change": keep}, indent=1))
    lines = [f"# Ripple and locality: {args.method} on {args.model}, {len(cases)} dev cases, k=all", "",
             f"Command: `{command}`", "", "| questions | n | as expected |", "|---|---:|---:|",
             f"| single-hop, edited: give the new object | {len(single_change)} | "
             f"{summary['changed_as_expected_single_hop']} |",
             f"| multi-hop through an edit: give the new answer | {len(multi_change)} | "
             f"{summary['changed_as_expected_multi_hop']} |",
             f"| single-hop, unedited: same answer as the plain model (locality) | {len(keep)} | "
             f"{summary['unchanged_as_expected']} |", "",
             f"Wall time {summary['wall_seconds']} s."]
    (args.out / f"ripple{suffix}.md").write_text("\n".join(lines) + "\n")
    logger.info("%s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
