"""Issue 5's comparison table: the editagent method against MeLLo and PokeMQA on the same run settings.

Reads the per-run JSON files of ``benchmarks/agent_comparison.sh`` (same model, cases, seed and k) and writes
``benchmarks/results/agent_comparison.{json,md}``.

    python benchmarks/agent_comparison.py --model smollm2-135m-instruct --k all --cases 150
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

METHODS = ("no-edit", "mello", "mello-guided", "pokemqa", "ike", "serac", "agent")  # rows shown where a run exists


def load(results: Path, model: str, k: str, cases: int, seed: int) -> dict[str, dict[str, Any]]:
    found = {}
    for method in METHODS:
        path = results / f"mquake_{model}_{method}_k{k}_n{cases}_s{seed}.json"
        if path.exists():
            found[method] = json.loads(path.read_text())["summary"]
    return found


def compare(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    agent, mello, poke = rows.get("agent"), rows.get("mello"), rows.get("pokemqa")
    verdict: dict[str, Any] = {}
    if agent and mello:
        verdict["agent_over_mello"] = (round(agent["multi_hop_acc"] / mello["multi_hop_acc"], 2)
                                       if mello["multi_hop_acc"] else "unbounded (MeLLo scored 0)")
        verdict["at_least_2x_mello"] = agent["multi_hop_acc"] >= 2 * mello["multi_hop_acc"]
    if agent and poke:
        verdict["agent_minus_pokemqa_points"] = round(100 * (agent["multi_hop_acc"] - poke["multi_hop_acc"]), 1)
        verdict["at_least_10_points_over_pokemqa"] = agent["multi_hop_acc"] >= poke["multi_hop_acc"] + 0.10
    return verdict


def render(rows: dict[str, dict[str, Any]], verdict: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"# editagent vs MeLLo, PokeMQA, IKE and SERAC: {args.model}, {args.cases} dev cases, k={args.k}, "
             f"seed {args.seed}", "",
             "Same model, cases (50 per hop count), edit batch and seed; one suite (`benchmarks/agent_comparison.sh`). "
             "Multi-hop: a case is right if any of its three phrasings gets the new answer (later phrasings are "
             "asked only while none is right). Hop-wise: right answer, right hop count, every hop right. Costs are "
             "per question asked; times are wall time on 2 shared CPU cores (other runs alongside), so they are "
             "rough.", "",
             "| method | multi-hop acc | conflict-free acc | hop-wise acc | LLM calls / question | s / question "
             "| main failures |", "|---|---:|---:|---:|---:|---:|---|"]
    for method in METHODS:
        row = rows.get(method)
        if not row:
            continue
        failures = sorted(row.get("failure_categories", {}).items(), key=lambda item: -item[1])[:3]
        lines.append(f"| {method} | {row['multi_hop_acc']} | {row.get('multi_hop_acc_conflict_free', '-')} | "
                     f"{row['hop_acc'] if row['hop_acc'] is not None else '-'} | {row['llm_calls_per_question']} | "
                     f"{row['seconds_per_question']} | {', '.join(f'{n} {c}' for n, c in failures)} |")
    lines += ["", "| check | value |", "|---|---|"] + [f"| {key} | {value} |" for key, value in verdict.items()]
    lines += ["", "Commands:", ""] + [f"- `{rows[m]['command']}`" for m in METHODS if m in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--k", default="all")
    parser.add_argument("--cases", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = load(args.results, args.model, args.k, args.cases, args.seed)
    verdict = compare(rows)
    stem = args.results / f"agent_comparison_{args.model}_k{args.k}_n{args.cases}"
    stem.with_suffix(".json").write_text(json.dumps({"rows": rows, "verdict": verdict}, indent=1))
    stem.with_suffix(".md").write_text(render(rows, verdict, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
