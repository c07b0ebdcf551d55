"""`ask` on questions and facts beyond MQuAKE's phrasing: the free-form probe sets in `benchmarks/data/`.

Every probe's edits go into one namespace (one user's memory), then every question is asked against all of them.
In scope: the answer must be the probe's answer (or an alias), by ``answer_matches``. Out of scope: the answer must
be exactly the plain model's answer to the question (the no-edit prompt), i.e. the edits changed nothing.
A timing pass then adds 10,000 other edits to the namespace and times single `ask` calls one by one: those answered
from edits alone (no model), and how many embedding calls each made. Example:

    python benchmarks/freeform.py                        # benchmarks/data/freeform.jsonl -> results/freeform.{json,md}
    python benchmarks/freeform.py --untuned              # also the held-out probes, reported apart
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from editagent import Edit, EditAgent
from editagent.decompose import answer_directly
from editagent.eval import answer_matches
from editagent.eval.host import command_line
from editagent.llm import TransformersLLM
from editagent.models import load_embedder

logger = logging.getLogger("benchmarks.freeform")
DATA = Path(__file__).resolve().parent / "data"
TIMING_EDITS = 10_000


class CountingEmbedder:
    """The real embedder, counting ``encode`` calls (what 'at most one embedding call per hop' is read from)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, 0

    def encode(self, texts: Sequence[str], **options: Any) -> Any:
        self.calls += 1
        return self.inner.encode(texts, **options)


def load_probes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def probe_edits(probes: Sequence[dict[str, Any]]) -> list[Edit]:
    """The union of the probes' edits, one per (subject, relation), with every alias given for the subject."""
    facts: dict[tuple[str, str], dict[str, Any]] = {}
    aliases: dict[str, list[str]] = defaultdict(list)
    for probe in probes:
        for fact in probe["edits"]:
            facts.setdefault((fact["subject"].casefold(), fact["relation"].casefold()), fact)
            aliases[fact["subject"]] += [a for a in fact.get("aliases", []) if a not in aliases[fact["subject"]]]
    return [Edit(subject=f["subject"], relation=f["relation"], object=f["object"], aliases=aliases[f["subject"]],
                 source="freeform") for f in facts.values()]


def judge(probe: dict[str, Any], answer: Any, plain: str) -> bool:
    if probe["scope"] == "in":
        return answer_matches(answer.text, [probe["answer"], *probe.get("aliases", [])])
    return answer.text == plain


def evaluate(agent: EditAgent, llm: TransformersLLM, probes: list[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    questions = [p["question"] for p in probes]
    plain = [text for text, _ in answer_directly(llm, questions)]
    rows = []
    for start in tqdm(range(0, len(probes), batch), desc="asking", unit="batch"):
        chunk = probes[start: start + batch]
        for probe, answer, base in zip(chunk, agent.ask_many([p["question"] for p in chunk]),
                                       plain[start: start + batch], strict=True):
            rows.append({"id": probe["id"], "scope": probe["scope"], "kind": probe["kind"], "tags": probe["tags"],
                         "hops": probe["hops"], "question": probe["question"], "expected": probe["answer"],
                         "answer": answer.text, "plain": base, "route": answer.route,
                         "correct": judge(probe, answer, base),
                         "trace": [{"tier": h.tier, "relation": h.relation, "answer": h.answer} for h in answer.trace]})
    return rows


def rate(rows: Sequence[dict[str, Any]]) -> float | None:
    return round(sum(r["correct"] for r in rows) / len(rows), 4) if rows else None


def timing(agent: EditAgent, embedder: CountingEmbedder, probes: list[dict[str, Any]], rows: list[dict[str, Any]]
           ) -> dict[str, Any]:
    """Single asks, one at a time, with ``TIMING_EDITS`` other edits in the namespace."""
    filler = [Edit(subject=f"Filler entity {i}", relation=("employer", "place of birth", "spouse", "mentor")[i % 4],
                   object=f"Filler object {i}", source="timing") for i in range(TIMING_EDITS)]
    agent.edit_many(filler, progress=True)
    exact = [r["question"] for r in rows if r["scope"] == "in" and r["correct"] and r["trace"]
             and all(h["tier"] == "exact" for h in r["trace"])]
    linked = [r for r in rows if r["scope"] == "in" and r["correct"]
              and any(h["tier"] in ("meaning", "retrieval") for h in r["trace"])]
    agent.ask(exact[0])  # warm caches (the store view is built once per store version)
    exact_ms = []
    for question in exact:
        started = time.perf_counter()
        answer = agent.ask(question)
        exact_ms.append((time.perf_counter() - started) * 1000)
        assert answer.route == "memory"
    linked_ms, calls_per_hop = [], []
    for row in linked:
        before = embedder.calls
        started = time.perf_counter()
        answer = agent.ask(row["question"])
        linked_ms.append((time.perf_counter() - started) * 1000)
        calls_per_hop.append((embedder.calls - before) / max(len(answer.trace), 1))
    return {"n_edits_in_namespace": len(agent.edits()), "n_edits_only": len(exact),
            "p50_ms_edits_only": round(statistics.median(exact_ms), 2),
            "p99_ms_edits_only": round(sorted(exact_ms)[max(0, int(0.99 * len(exact_ms)) - 1)], 2),
            "n_linked": len(linked), "p50_ms_linked": round(statistics.median(linked_ms), 2) if linked_ms else None,
            "p99_ms_linked": round(sorted(linked_ms)[max(0, int(0.99 * len(linked_ms)) - 1)], 2) if linked_ms
            else None,
            "max_embedding_calls_per_hop": max(calls_per_hop) if calls_per_hop else None,
            "mean_embedding_calls_per_hop": round(statistics.mean(calls_per_hop), 3) if calls_per_hop else None}


def summarise(rows: list[dict[str, Any]], untuned: list[dict[str, Any]]) -> dict[str, Any]:
    in_scope = [r for r in rows if r["scope"] == "in"]
    out = [r for r in rows if r["scope"] == "out"]
    tags = sorted({t for r in rows for t in r["tags"]})
    return {
        "n_in_scope": len(in_scope), "in_scope_acc": rate(in_scope),
        "n_out_of_scope": len(out), "out_of_scope_unchanged": rate(out),
        "by_kind": {k: {"n": len(g), "acc": rate(g)} for k, g in _group(rows, "kind").items()},
        "by_tag": {t: {"n": len(g), "acc": rate(g)} for t in tags if (g := [r for r in rows if t in r["tags"]])},
        "by_hops": {str(h): {"n": len(g), "acc": rate(g)} for h, g in _group(in_scope, "hops").items()},
        "tiers": dict(Counter(h["tier"] for r in in_scope if r["correct"] for h in r["trace"])),
        "n_untuned": len(untuned), "untuned_acc": rate(untuned),
        "untuned_in_scope_acc": rate([r for r in untuned if r["scope"] == "in"]),
        "untuned_out_of_scope_unchanged": rate([r for r in untuned if r["scope"] == "out"]),
    }


def _group(rows: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    return dict(sorted(groups.items()))


def markdown(result: dict[str, Any]) -> str:
    s = result
    lines = ["# Free-form questions: `ask` beyond MQuAKE's phrasing", "",
             f"Model {s['model']}; {s['n_edits']} edits in one namespace; command: `{s['command']}`", "",
             "| set | n | accuracy |", "|---|---:|---:|",
             f"| in scope (answer from the edits) | {s['n_in_scope']} | {s['in_scope_acc']} |",
             f"| out of scope (plain model's answer unchanged) | {s['n_out_of_scope']} | "
             f"{s['out_of_scope_unchanged']} |"]
    if s["n_untuned"]:
        lines.append(f"| untuned probes, written before tuning and read after it | {s['n_untuned']} | "
                     f"{s['untuned_acc']} (in scope {s['untuned_in_scope_acc']}, out of scope "
                     f"{s['untuned_out_of_scope_unchanged']}) |")
    lines += ["", "| kind | n | accuracy |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {v['acc']} |" for k, v in s["by_kind"].items()]
    lines += ["", "| tag | n | accuracy |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {v['acc']} |" for k, v in s["by_tag"].items()]
    lines += ["", "| hops (in scope) | n | accuracy |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {v['acc']} |" for k, v in s["by_hops"].items()]
    t = s["timing"]
    lines += ["", f"Speed, {t['n_edits_in_namespace']} edits in the namespace, single asks: answered from edits alone "
              f"(exact tier only, {t['n_edits_only']} questions) p50 {t['p50_ms_edits_only']} ms, p99 "
              f"{t['p99_ms_edits_only']} ms; with relation linking or retrieval ({t['n_linked']} questions) p50 "
              f"{t['p50_ms_linked']} ms, p99 {t['p99_ms_linked']} ms, at most {t['max_embedding_calls_per_hop']} "
              f"embedding calls per hop (mean {t['mean_embedding_calls_per_hop']}).", "",
              "Wrong answers:", "", "| id | question | expected | answer | route |", "|---|---|---|---|---|"]
    lines += [f"| {r['id']} | {r['question']} | {r['expected'] or '(plain: ' + r['plain'] + ')'} | {r['answer']} | "
              f"{r['route']} |" for r in s["wrong"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=Path, default=DATA / "freeform.jsonl")
    parser.add_argument("--untuned", action="store_true", help="also the held-out probes (freeform_untuned.jsonl)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="freeform")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    probes = load_probes(args.probes)
    held_out = load_probes(DATA / "freeform_untuned.jsonl") if args.untuned else []
    llm = TransformersLLM.load(args.model)
    embedder = CountingEmbedder(load_embedder())
    with tempfile.TemporaryDirectory() as folder:
        agent = EditAgent(store=Path(folder) / "store", llm=llm, embedder=embedder)
        edits = probe_edits([*probes, *held_out])
        agent.edit_many(edits)
        rows = evaluate(agent, llm, probes, args.batch)
        untuned = evaluate(agent, llm, held_out, args.batch) if held_out else []
        result = {"model": args.model, "n_edits": len(edits), **summarise(rows, untuned),
                  "command": command_line()}
        result["timing"] = {} if args.no_timing else timing(agent, embedder, probes, rows)
        result["p50_ms_edits_only"] = result["timing"].get("p50_ms_edits_only")
    result["wall_seconds"] = round(time.time() - started, 1)
    result["wrong"] = [r for r in [*rows, *untuned] if not r["correct"]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({**result, "rows": rows, "untuned_rows": untuned}, indent=1))
    if result["timing"]:
        (args.out / f"{args.name}.md").write_text(markdown(result))
    logger.info("in scope %s (n %d), out of scope unchanged %s (n %d), untuned %s (n %d)", result["in_scope_acc"],
                result["n_in_scope"], result["out_of_scope_unchanged"], result["n_out_of_scope"],
                result["untuned_acc"], result["n_untuned"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
