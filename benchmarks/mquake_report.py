"""Render benchmarks/results/mquake_summary.json as one Markdown table (mquake_summary.md).

    python benchmarks/mquake_report.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (
    ("model", "model"), ("method", "method"), ("k", "k"), ("n_cases", "cases"),
    ("multi_hop_acc", "multi-hop acc"), ("multi_hop_acc_conflict_free", "conflict-free acc"),
    ("hop_acc", "hop-wise acc"), ("pre_edit_acc", "pre-edit acc"), ("seconds_per_question", "s/question"),
    ("answer_seconds_total", "time answering (s)"),
    ("llm_calls_per_question", "LLM calls/question"), ("seed", "seed"),
)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render(rows: list[dict]) -> str:
    lines = ["# MQuAKE results", "",
             "Multi-hop accuracy: a case is right if any of its three questions is answered with the new answer or "
             "an alias (SQuAD normalisation, exact match). Hop-wise: right final answer, right number of hops and "
             "every intermediate answer right. Pre-edit: against the original answer (the no-edit baseline's "
             "yardstick). Conflict-free: without the dev cases whose new chain another case's edit contradicts "
             "when all edits share one memory. Times are CPU wall time on 2 cores shared with other runs "
             "(several benchmarks ran at once, one thread each), so compare them within a row's context only.", "",
             "| " + " | ".join(title for _, title in COLUMNS) + " | main failure categories |",
             "|" + "---|" * (len(COLUMNS) + 1)]
    for row in sorted(rows, key=lambda r: (r["model"], r["method"], str(r["k"]))):
        failures = sorted(row.get("failure_categories", {}).items(), key=lambda item: -item[1])[:3]
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " | "
                     + ", ".join(f"{name} {count}" for name, count in failures) + " |")
    lines += ["", "Commands:", ""] + [f"- `{row['command']}`" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    rows = json.loads((args.results / "mquake_summary.json").read_text())
    (args.results / "mquake_summary.md").write_text(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
