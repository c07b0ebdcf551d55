"""The MQuAKE evaluation: any method, any model, edit batches of k cases sharing one memory.

Resumable: every finished case is appended to a JSONL checkpoint, and a rerun with
the same settings skips the cases already there. A case stops being asked once one
of its three phrasings is answered correctly (the metric, "any phrasing correct",
is the same, and the run is up to 3x shorter).
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock
from tqdm.auto import tqdm

from editagent.editors.registry import editor_methods
from editagent.eval.mquake import MQuAKECase, answer_matches, load_conflicted_case_ids, load_mquake
from editagent.schema import Answer

logger = logging.getLogger(__name__)

# The edits go into the weights (every registered editor of short objects); the edited model answers directly.
PARAMETER_METHODS = editor_methods(long_targets=False)
DIRECT_METHODS = ("no-edit", *PARAMETER_METHODS)  # one answer per question, no decomposition to check
Asker = Callable[[Sequence[str], Sequence[str]], list[Answer]]  # (questions, their namespaces) -> answers


@dataclass
class RunConfig:
    dataset: str
    method: str
    model: str = "smollm2-135m-instruct"
    k: int | str = "all"
    n_cases: int = 120
    seed: int = 0
    out: Path = Path("benchmarks/results")
    chunk: int = 16
    conflicted: str | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    shard: tuple[int, int] | None = None  # (index, count): evaluate every count-th selected case from index

    @property
    def run_id(self) -> str:
        model = re.sub(r"[^A-Za-z0-9.-]+", "-", self.model)
        return f"mquake_{model}_{self.method}_k{self.k}_n{self.n_cases}_s{self.seed}"

    @property
    def checkpoint(self) -> Path:
        shard = f".shard{self.shard[0]}of{self.shard[1]}" if self.shard else ""
        return self.out / f"{self.run_id}{shard}.ckpt.jsonl"


def select_cases(cases: Sequence[MQuAKECase], n_cases: int, seed: int) -> list[MQuAKECase]:
    """``n_cases`` cases, as even across hop counts as the data allows, in a seeded order."""
    by_hops: dict[int, list[MQuAKECase]] = defaultdict(list)
    for case in cases:
        by_hops[case.n_hops].append(case)
    rng = random.Random(seed)
    for group in by_hops.values():
        rng.shuffle(group)
    hop_counts = sorted(by_hops)
    chosen: list[MQuAKECase] = []
    per_hop = n_cases // len(hop_counts)
    for hops in hop_counts:
        chosen.extend(by_hops[hops][:per_hop])
    leftovers = [c for hops in hop_counts for c in by_hops[hops][per_hop:]]
    chosen.extend(leftovers[: n_cases - len(chosen)])
    rng.shuffle(chosen)
    return chosen


def edit_groups(selected: Sequence[MQuAKECase], every_case: Sequence[MQuAKECase],
                k: int | str) -> list[tuple[list[MQuAKECase], list[MQuAKECase]]]:
    """(cases whose edits share one memory, cases evaluated against it), per group.

    k="all": one memory holds the edits of every case in the dataset file, as in the paper.
    """
    if k == "all":
        return [(list(every_case), list(selected))]
    size = int(k)
    return [(list(selected[i: i + size]), list(selected[i: i + size])) for i in range(0, len(selected), size)]


def hop_correct(case: MQuAKECase, answer: Answer) -> bool:
    """PokeMQA's hop-wise criterion: right final answer, right number of hops, every hop's answer right."""
    if not answer_matches(answer.text, case.new_answers) or len(answer.trace) != case.n_hops:
        return False
    return all(answer_matches(hop.answer, gold.answers) for hop, gold in zip(answer.trace, case.new_single_hops,
                                                                              strict=True))


def failure_category(case: MQuAKECase, answer: Answer) -> str:
    """Why a wrong answer went wrong, read from its trace."""
    if answer.failure:
        return "format break" if answer.failure.startswith("format") else answer.failure
    if answer_matches(answer.text, case.new_answers):
        return "correct"
    if answer.route == "model":  # the agent's router found no edit for it
        return "unparsed question" if answer.trace and "unparsed" in answer.trace[0].draft_answer else "no edit found"
    if not answer.trace:
        return "model answer" if answer.method in DIRECT_METHODS else "no decomposition"
    if len(answer.trace) != case.n_hops:
        return "wrong decomposition"
    edited = {tuple(t) for t in case.orig.edit_triples}
    for position, (hop, gold) in enumerate(zip(answer.trace, case.new_single_hops, strict=True)):
        if answer_matches(hop.answer, gold.answers):
            continue
        hop_is_edited = tuple(case.orig.new_triples[position]) in edited if case.orig.new_triples else False
        if hop_is_edited:
            return "retrieval miss" if hop.source != "edit" else "edit misapplied"
        return "edit misapplied" if hop.source == "edit" else "model recall"
    return "final answer"


def _question_record(case: MQuAKECase, question: str, answer: Answer, method: str) -> dict[str, Any]:
    return {
        "question": question,
        "answer": answer.text,
        "correct": answer_matches(answer.text, case.new_answers),
        "correct_pre_edit": answer_matches(answer.text, case.old_answers),
        "hop_correct": hop_correct(case, answer) if method not in DIRECT_METHODS else False,
        "category": failure_category(case, answer),
        "llm_calls": answer.llm_calls,
        "seconds": answer.seconds,
        "failure": answer.failure,
        "trace": [hop.model_dump() for hop in answer.trace],
        "raw": answer.raw,
    }


def _read_checkpoint(path: Path) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: that case is simply redone
                    continue
                done[int(row["case_id"])] = row
    return done


def run(config: RunConfig, ask: Asker, add_edits: Callable[[list[MQuAKECase], str], None]) -> dict[str, Any]:
    """Evaluate; returns the full result (summary + per-case records) and writes JSON/Markdown/PNG."""
    started = time.time()
    every_case = load_mquake(config.dataset)
    selected = select_cases(every_case, config.n_cases, config.seed)
    if config.shard is not None:  # a worker's share; the memory still holds every group's edits
        index, count = config.shard
        selected = selected[index::count]
    conflicted = load_conflicted_case_ids(config.conflicted) if config.conflicted else set()
    config.out.mkdir(parents=True, exist_ok=True)
    checkpoint = config.checkpoint
    done = _read_checkpoint(checkpoint)
    if config.shard is not None:  # a sharded resume of a run begun in one process skips what that process did
        done = {**_read_checkpoint(replace(config, shard=None).checkpoint), **done}
    todo = sum(1 for case in selected if case.case_id not in done)
    logger.info("%s: %d cases selected, %d of them already done (%s)", config.run_id, len(selected),
                len(selected) - todo, checkpoint)
    # Every group's edits go into its own namespace first, so that one batch of questions
    # can span groups (at k=1 a group is a single case, too small to batch on its own).
    pending: list[tuple[MQuAKECase, str]] = []
    for group_index, (memory_cases, eval_cases) in enumerate(edit_groups(selected, every_case, config.k)):
        group_pending = [case for case in eval_cases if case.case_id not in done]
        if group_pending and config.method != "no-edit":
            add_edits(memory_cases, f"g{group_index}")
        pending.extend((case, f"g{group_index}") for case in group_pending)
    bar = tqdm(total=len(selected), initial=len(selected) - todo, desc=config.run_id, unit="case")
    for start in range(0, len(pending), config.chunk):
        chunk = pending[start: start + config.chunk]
        records: dict[int, list[dict[str, Any]]] = {case.case_id: [] for case, _ in chunk}
        open_cases = list(chunk)
        for phrasing in range(3):
            open_cases = [(case, ns) for case, ns in open_cases if phrasing < len(case.questions)]
            if not open_cases:
                break
            questions = [case.questions[phrasing] for case, _ in open_cases]
            answers = ask(questions, [ns for _, ns in open_cases])
            still_open = []
            for (case, ns), question, answer in zip(open_cases, questions, answers, strict=True):
                record = _question_record(case, question, answer, config.method)
                records[case.case_id].append(record)
                solved = record["correct_pre_edit"] if config.method == "no-edit" else record["correct"]
                if not solved:
                    still_open.append((case, ns))
            open_cases = still_open
        with checkpoint.open("a") as handle:
            for case, _ in chunk:
                row = {"case_id": case.case_id, "n_hops": case.n_hops, "n_edits": case.n_edits,
                       "conflicted": case.case_id in conflicted, "questions": records[case.case_id]}
                handle.write(json.dumps(row) + "\n")
                done[case.case_id] = row
        bar.update(len(chunk))
    bar.close()
    rows = [done[case.case_id] for case in selected]
    result = {"summary": summarise(config, rows, time.time() - started), "cases": rows}
    if config.shard is None:
        write_reports(config, result)
    return result


def merge_shards(config: RunConfig, count: int) -> int:
    """Append the workers' checkpoints (``config.shard`` = (i, count)) to the run's own, case by case, and remove
    them; the run's next invocation then finds every case done. Returns how many cases were merged."""
    main = replace(config, shard=None).checkpoint
    done = _read_checkpoint(main)
    merged = 0
    with main.open("a") as handle:
        for index in range(count):
            shard = replace(config, shard=(index, count)).checkpoint
            for case_id, row in _read_checkpoint(shard).items():
                if case_id not in done:
                    handle.write(json.dumps(row) + "\n")
                    done[case_id] = row
                    merged += 1
            shard.unlink(missing_ok=True)
    return merged


def rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def summarise(config: RunConfig, rows: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    questions = [q for row in rows for q in row["questions"]]
    any_correct = [any(q["correct"] for q in row["questions"]) for row in rows]
    summary: dict[str, Any] = {
        "model": config.model, "method": config.method, "k": config.k, "n_cases": len(rows),
        "seed": config.seed, "dataset": Path(config.dataset).name,
        "multi_hop_acc": rate(any_correct),
        "hop_acc": None if config.method in DIRECT_METHODS else  # a direct answer has no hops to check
        rate([any(q["hop_correct"] for q in row["questions"]) for row in rows]),
        "first_phrasing_acc": rate([row["questions"][0]["correct"] for row in rows]),
        "pre_edit_acc": rate([any(q["correct_pre_edit"] for q in row["questions"]) for row in rows]),
        "n_questions_asked": len(questions),
        "seconds_per_question": round(sum(q["seconds"] for q in questions) / max(len(questions), 1), 3),
        # Summed over every invocation of a resumed run (a batch's time is shared among its questions).
        "answer_seconds_total": round(sum(q["seconds"] for q in questions), 1),
        "llm_calls_per_question": round(sum(q["llm_calls"] for q in questions) / max(len(questions), 1), 2),
        "wall_seconds_this_invocation": round(wall, 1),
        "by_hops": {str(h): rate([c for row, c in zip(rows, any_correct, strict=True) if row["n_hops"] == h])
                    for h in sorted({row["n_hops"] for row in rows})},
        "by_edits": {str(e): rate([c for row, c in zip(rows, any_correct, strict=True) if row["n_edits"] == e])
                     for e in sorted({row["n_edits"] for row in rows})},
        "failure_categories": dict(Counter(q["category"] for q in questions if not q["correct"])),
        "command": config.command,
        **config.extra,
    }
    if config.conflicted:
        free = [c for row, c in zip(rows, any_correct, strict=True) if not row["conflicted"]]
        summary["multi_hop_acc_conflict_free"] = rate(free)
        summary["n_conflict_free"] = len(free)
    return summary


def write_reports(config: RunConfig, result: dict[str, Any]) -> None:
    out, summary = config.out, result["summary"]
    (out / f"{config.run_id}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# MQuAKE: {summary['method']} on {summary['model']}, k={summary['k']}", "",
             f"Command: `{summary['command']}`", "",
             "| metric | value |", "|---|---|"]
    for key in ("n_cases", "multi_hop_acc", "hop_acc", "first_phrasing_acc", "pre_edit_acc",
                "multi_hop_acc_conflict_free", "seconds_per_question", "llm_calls_per_question", "seed"):
        if key in summary:
            lines.append(f"| {key} | {summary[key]} |")
    lines += ["", "| hops | multi-hop acc |", "|---|---|"] + [f"| {h} | {a} |" for h, a in summary["by_hops"].items()]
    lines += ["", "| edits | multi-hop acc |", "|---|---|"] + [
        f"| {e} | {a} |" for e, a in summary["by_edits"].items()]
    lines += ["", "Why wrong answers were wrong (per question asked, from the traces):", "",
              "| category | questions |", "|---|---|"] + [
        f"| {c} | {n} |" for c, n in sorted(summary["failure_categories"].items(), key=lambda x: -x[1])]
    (out / f"{config.run_id}.md").write_text("\n".join(lines) + "\n")
    _plot(out / f"{config.run_id}.png", summary)
    _update_summary_file(out / "mquake_summary.json", summary)


def _plot(path: Path, summary: dict[str, Any]) -> None:
    import matplotlib  # noqa: PLC0415 - only reports need it

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, key, title in ((axes[0], "by_hops", "by number of hops"), (axes[1], "by_edits", "by number of edits")):
        labels = list(summary[key])
        axis.bar(labels, [summary[key][label] or 0 for label in labels])
        axis.set_ylim(0, 1)
        axis.set_title(title)
        axis.set_ylabel("multi-hop accuracy")
    fig.suptitle(f"{summary['method']} · {summary['model']} · k={summary['k']} · n={summary['n_cases']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _update_summary_file(path: Path, summary: dict[str, Any]) -> None:
    """One row per (model, method, k, n_cases): a rerun replaces its row. Locked: runs in parallel share the file."""
    with FileLock(str(path) + ".lock"):
        rows = json.loads(path.read_text()) if path.exists() else []
        key = (summary["model"], summary["method"], str(summary["k"]), summary["n_cases"])
        rows = [r for r in rows if (r["model"], r["method"], str(r["k"]), r["n_cases"]) != key]
        rows.append({k: v for k, v in summary.items() if k not in ("failure_categories",)} |
                    {"failure_categories": summary["failure_categories"]})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(path)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
