"""`ask` on questions another process wrote: PokeMQA's paraphrases of single-hop questions (cls-filtered.json).

Each edit sentence there follows one of MQuAKE's relation templates, so it maps back to (subject, relation, object).
The edits of the held-out 20 % (``split_by_edit``, seed 0: outside the trained scope detector's training split) go
into one namespace; each of their questions that asks for the object (it names the subject; "Who is a citizen of
New Zealand?" asks for the subject and is left out, and counted) must be answered with the edit's object.
Edits whose (subject, relation) has another held-out edit with another object are left out (one supersedes the
other). Example:

    python benchmarks/paraphrase.py            # -> benchmarks/results/paraphrase.{json,md}
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from editagent import Edit, EditAgent
from editagent.eval import answer_matches
from editagent.eval.host import command_line
from editagent.eval.scope_data import load_scope_edits, split_by_edit
from editagent.llm import TransformersLLM
from editagent.models import load_embedder
from editagent.names import normalise_name
from editagent.relations import mquake_relations

logger = logging.getLogger("benchmarks.paraphrase")
# MQuAKE's own spellings of two templates, which editagent's relation table corrects
_MISSPELT = {"The univeristy where {s} was educated is {o}": "educated at",
             "The origianl broadcaster of {s} is {o}": "original broadcaster"}


def _patterns() -> list[tuple[re.Pattern[str], str]]:
    templates = {r.sentence.rstrip("."): r.label for r in mquake_relations()} | _MISSPELT
    ordered = sorted(templates, key=lambda t: -len(t.replace("{s}", "").replace("{o}", "")))
    return [(re.compile("^" + re.escape(t).replace(r"\{s\}", "(?P<s>.+?)").replace(r"\{o\}", "(?P<o>.+)") + "$"),
             templates[t]) for t in ordered]


def triple(sentence: str, patterns: list[tuple[re.Pattern[str], str]]) -> tuple[str, str, str] | None:
    for pattern, relation in patterns:
        match = pattern.match(sentence.strip().rstrip("."))
        if match:
            return match["s"], relation, match["o"]
    return None


def asks_for_object(question: str, subject: str) -> bool:
    return f" {normalise_name(subject)} " in f" {normalise_name(question)} "


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder holding pokemqa/cls-filtered.json (default: data_file finds it)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    held_out = split_by_edit(load_scope_edits(args.data), 0.2, 0).test
    patterns = _patterns()
    facts = [(edit, triple(edit.sentence, patterns)) for edit in held_out]
    unparsed = sum(1 for _, t in facts if t is None)
    objects: dict[tuple[str, str], set[str]] = defaultdict(set)
    for _, t in facts:
        if t is not None:
            objects[(t[0].casefold(), t[1])].add(t[2])
    kept = [(edit, t) for edit, t in facts if t is not None and len(objects[(t[0].casefold(), t[1])]) == 1]
    edits = {(t[0].casefold(), t[1]): Edit(subject=t[0], relation=t[1], object=t[2], sentence=edit.sentence,
                                           source="pokemqa") for edit, t in kept}
    probes = [(question, t) for edit, t in kept for question in edit.questions]
    forward = [(q, t) for q, t in probes if asks_for_object(q, t[0])]
    llm = TransformersLLM.load(args.model)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        agent = EditAgent(store=Path(folder) / "store", llm=llm, embedder=load_embedder())
        agent.edit_many(list(edits.values()), progress=True)
        for start in tqdm(range(0, len(forward), args.batch), desc="asking", unit="batch"):
            chunk = forward[start: start + args.batch]
            for (question, (subject, relation, obj)), answer in zip(chunk, agent.ask_many([q for q, _ in chunk]),
                                                                    strict=True):
                rows.append({"question": question, "subject": subject, "relation": relation, "expected": obj,
                             "answer": answer.text, "route": answer.route,
                             "tiers": [hop.tier for hop in answer.trace],
                             "correct": answer_matches(answer.text, [obj])})
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    result = {"n": n, "acc": round(correct / n, 4), "n_edits": len(edits), "n_held_out_edits": len(held_out),
              "n_unparsed_sentences": unparsed, "n_conflicting_edits_left_out": len(facts) - unparsed - len(kept),
              "n_questions_asking_for_the_subject_left_out": len(probes) - len(forward),
              "by_relation": {rel: round(sum(r["correct"] for r in g) / len(g), 3) for rel, g in
                              sorted(_group(rows, "relation").items())},
              "tiers_of_correct": dict(Counter(t for r in rows if r["correct"] for t in r["tiers"])),
              "routes": dict(Counter(r["route"] for r in rows)), "model": args.model,
              "wall_seconds": round(time.time() - started, 1), "command": command_line()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paraphrase.json").write_text(json.dumps({**result, "wrong": [r for r in rows if not r["correct"]]},
                                                         indent=1))
    lines = ["# Paraphrased single-hop questions (PokeMQA's cls-filtered.json, held-out edits)", "",
             f"Command: `{result['command']}`; model {args.model}; {len(edits)} edits in one namespace.", "",
             f"Answered with the edit's object: **{result['acc']}** of {n} questions.", "",
             f"Left out: {result['n_questions_asking_for_the_subject_left_out']} questions that ask for the subject, "
             f"{result['n_conflicting_edits_left_out']} edits whose subject and relation another held-out edit gives "
             f"another object, {unparsed} sentences no template reads.", "",
             "| relation | accuracy |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in result["by_relation"].items()]
    (args.out / "paraphrase.md").write_text("\n".join(lines) + "\n")
    logger.info("paraphrase: %d of %d (%.3f)", correct, n, result["acc"])
    return 0


def _group(rows: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    return groups


if __name__ == "__main__":
    raise SystemExit(main())
