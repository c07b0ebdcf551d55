"""Sharded MQuAKE evaluation checked against one process: the same cases, seed and method run with ``--workers 1``
and ``--workers N`` (Ray tasks, each with its own model copy), each from scratch into its own folder; every question's
answer must be the same. Writes ``benchmarks/results/mquake_workers.{json,md}`` with both wall times. Example:

    python benchmarks/mquake_workers.py --method agent --k all --cases 30 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editagent.eval.host import command_line

HERE = Path(__file__).resolve().parent


def run(args: argparse.Namespace, workers: int, folder: Path) -> tuple[float, dict[str, Any]]:
    out = folder / f"workers{workers}" / "results"
    command = [sys.executable, str(HERE / "mquake.py"), "--method", args.method, "--k", args.k, "--cases",
               str(args.cases), "--seed", str(args.seed), "--out", str(out), "--workers", str(workers)]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    wall = time.perf_counter() - started
    return wall, json.loads(next(out.glob(f"mquake_*_{args.method}_k{args.k}_n{args.cases}_s{args.seed}.json"))
                            .read_text())


def answers(result: dict[str, Any]) -> dict[str, str]:
    return {f"{case['case_id']}: {q['question']}": q["answer"] for case in result["cases"] for q in case["questions"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="agent")
    parser.add_argument("--k", default="all")
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        one_wall, one = run(args, 1, Path(folder))
        many_wall, many = run(args, args.workers, Path(folder))
    a, b = answers(one), answers(many)
    differ = sorted(q for q in a.keys() | b.keys() if a.get(q) != b.get(q))
    report = {"method": args.method, "k": args.k, "n_cases": args.cases, "seed": args.seed, "workers": args.workers,
              "n_questions": len(a), "same_answers": not differ, "differing": differ,
              "wall_seconds_1_worker": round(one_wall, 1), f"wall_seconds_{args.workers}_workers": round(many_wall, 1),
              "multi_hop_acc": [one["summary"]["multi_hop_acc"], many["summary"]["multi_hop_acc"]],
              "cpus": os.cpu_count(), "command": command_line()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mquake_workers.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "mquake_workers.md").write_text(
        f"# MQuAKE sharded over Ray workers\n\n`{report['command']}` ({args.method}, k={args.k}, {args.cases} dev "
        f"cases, seed {args.seed}; {report['cpus']} CPU cores)\n\n| workers | wall seconds | multi-hop acc |\n"
        f"|---:|---:|---:|\n| 1 | {report['wall_seconds_1_worker']} | {report['multi_hop_acc'][0]} |\n"
        f"| {args.workers} | {report[f'wall_seconds_{args.workers}_workers']} | {report['multi_hop_acc'][1]} |\n\n"
        f"Same answer to every one of the {len(a)} questions asked: **{report['same_answers']}**. Each worker loads "
        "its own model and builds its own memory of every case's edits (k = all), which is most of a short run's "
        "time on a small machine.\n")
    print(json.dumps({k: v for k, v in report.items() if k != "differing"}))
    return 0 if not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
