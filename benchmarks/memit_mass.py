"""Why MEMIT writing many edits at once loses locality on a small model, and what brings it back: one run that
writes the same MQuAKE dev edits at once under several settings and scores each (reliability and generalization
of the edits, locality of the same unrelated prompts; ``editagent.eval.editing.retention``). Example:

    OMP_NUM_THREADS=1 python benchmarks/memit_mass.py --edits 50 --locality-prompts 20

Variants: the batch size (10, 25, 50 at once), λ (``mom2_update_weight``) from 1× to 16× the default, refit rounds,
the layer range, the key statistics' sample size, and the 50 edits written as successive batches of 10 (each
batch's values fitted on the model as already edited, so later values see earlier edits). The values of the first
fit do not depend on λ, the refits or the statistics, so they are fitted once per layer range and reused. Each
finished variant is written to the result at once, so a stopped run resumes and runs of different variants can
go in parallel. Output: ``memit_mass_<model>.json``, ``.md`` and ``.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from editagent.editors import MEMIT, AppliedEdit, MemitConfig, WeightEdit
from editagent.eval.data import MQUAKE_DEV, data_file
from editagent.eval.editing import (
    Scorer,
    load_cloze_templates,
    locality_prompts,
    probe_for,
    retention,
)
from editagent.eval.host import command_line
from editagent.eval.mquake import load_mquake
from editagent.models import load_causal_lm

logger = logging.getLogger("benchmarks.memit_mass")


@dataclass(frozen=True)
class Variant:
    name: str
    n_edits: int  # the first n of --edits, written together (in chunks of ``chunk`` when set)
    options: dict[str, Any] = field(default_factory=dict)  # MemitConfig fields; "lambda_times": λ / default λ
    chunk: int | None = None


def variants(n: int) -> list[Variant]:
    sizes = [size for size in (10, 25) if size < n]
    return [
        *(Variant(f"{size} at once", size) for size in sizes),
        Variant(f"{n} at once (default)", n),
        *(Variant(f"{n}, λ ×{times}", n, {"lambda_times": times}) for times in (2, 4, 8, 16)),
        Variant(f"{n}, no refit", n, {"refits": 0}),
        Variant(f"{n}, 2 refits", n, {"refits": 2}),
        Variant(f"{n}, λ ×4, 2 refits", n, {"lambda_times": 4, "refits": 2}),
        Variant(f"{n} as batches of 10", n, chunk=10),
        Variant(f"{n}, C from 100k tokens", n, {"stats_tokens": 100_000}),
        Variant(f"{n}, layers 2-12", n, {"layers": list(range(2, 13))}),
        *(Variant(f"{n}, layers 2-12, λ ×{times}", n, {"layers": list(range(2, 13)), "lambda_times": times})
          for times in (4, 8, 16)),
    ]


class ReusedValues(MEMIT):
    """MEMIT whose first value fit is looked up in ``cache`` (shared by the variants): the fit depends on the edit,
    the top layer (the value site) and the value settings, not on λ or the refits. Refits fit afresh."""

    cache: dict[tuple[Any, ...], Any]
    reuse: bool = True

    def _values(self, items: Sequence[WeightEdit], desc: str) -> list[Any]:
        if not self.reuse or desc != "MEMIT target values":
            return super()._values(items, desc)
        keys = [(edit.prompt, edit.subject, edit.target, self.layers[-1]) for edit in items]
        missing = [edit for edit, key in zip(items, keys, strict=True) if key not in self.cache]
        if missing:
            fits = super()._values(missing, desc)
            for edit, fit in zip(missing, fits, strict=True):
                self.cache[(edit.prompt, edit.subject, edit.target, self.layers[-1])] = fit
        return [self.cache[key] for key in keys]


def run_variant(variant: Variant, model: Any, tok: Any, probes: Sequence[Any], scorer: Scorer,
                cache: dict[tuple[Any, ...], Any]) -> dict[str, Any]:
    options = dict(variant.options)
    times = options.pop("lambda_times", 1)
    memit = ReusedValues(model, tok, MemitConfig(**options), progress=False)
    memit.cache = cache
    if times != 1:
        default = memit.update_weight(memit.layers[0])
        memit = ReusedValues(model, tok, MemitConfig(**options, mom2_update_weight=default * times), progress=False)
        memit.cache = cache
    memit.load_statistics()
    chosen = probes[: variant.n_edits]
    edits = [probe.edit for probe in chosen]
    start = time.perf_counter()
    handles: list[AppliedEdit] = []
    try:
        if variant.chunk is None:
            handles.append(memit.apply(edits))
        else:
            for at in range(0, len(edits), variant.chunk):
                memit.reuse = at == 0  # later chunks are fitted on the model as edited so far
                handles.append(memit.apply(edits[at: at + variant.chunk]))
        seconds = time.perf_counter() - start
        scores = retention(scorer, chosen)
        norms = [float(delta.double().norm()) for handle in handles for delta in handle.deltas.values()]
    finally:
        for handle in reversed(handles):
            handle.undo()
    return {"variant": variant.name, "n_edits": variant.n_edits, "options": variant.options, "chunk": variant.chunk,
            **scores, "write_seconds": seconds, "lambda": memit.update_weight(memit.layers[0]),
            "layers": memit.layers, "update_norm": sum(n * n for n in norms) ** 0.5}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# MEMIT, many edits at once, on {result['model']}", "", f"Command: `{result['command']}` "
             f"({result['torch_threads']} torch threads; {result['locality_prompts']} unrelated prompts)", "",
             "reliability and generalization: over the edits written in that variant; locality: the unrelated "
             "prompts' answers as before the edits (first clause of the greedy continuation); locality_exact: the "
             "same first 8 tokens. update_norm: Frobenius norm of all weight changes together.", "",
             "| variant | n_edits | λ | reliability | generalization | locality | locality_exact | update_norm | "
             "write s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['n_edits']} | {r['lambda']:.0f} | {r['reliability']:.3f} | "
              f"{r['generalization']:.3f} | {r['locality']:.3f} | {r['locality_exact']:.3f} | {r['update_norm']:.2f} | "
              f"{r['write_seconds']:.0f} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7.5, 5))
    for row in result["rows"]:
        axis.scatter(row["locality"], row["reliability"], s=30)
        axis.annotate(row["variant"], (row["locality"], row["reliability"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axis.axvline(0.70, color="grey", linestyle=":", label="locality 0.70")
    axis.axhline(0.90, color="grey", linestyle="--", label="reliability 0.90")
    axis.set_xlabel("locality (unrelated prompts unchanged)")
    axis.set_ylabel("reliability (edits said)")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=7, loc="lower left")
    axis.set_title(f"MEMIT, edits written at once, {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def merged_rows(path: Path, result: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the rows on disk at ``path`` for the same edits and prompts: the last run's at start-up, and
    those another run (``--only`` in a parallel process) has written since; this run's row wins for a variant both
    have."""
    if not path.exists():
        return rows
    on_disk = json.loads(path.read_text())
    if (on_disk["edits"], on_disk["locality_prompts"]) != (result["edits"], result["locality_prompts"]):
        return rows
    ours = {row["variant"] for row in rows}
    return [*rows, *(row for row in on_disk["rows"] if row["variant"] not in ours)]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--edits", type=int, default=50, help="MQuAKE dev cases (first rewrite of each)")
    parser.add_argument("--locality-prompts", type=int, default=20)
    parser.add_argument("--only", nargs="+", help="run only the variants whose names contain one of these")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.edits < 2:
        parser.error("--edits: at least 2 (one edit is not many)")
    model, tok = load_causal_lm(args.model)
    cases = load_mquake(data_file(MQUAKE_DEV))
    clozes = load_cloze_templates(data_file("cloze_templates.json"))
    probes = [probe_for(case, 0, clozes) for case in cases[: args.edits]]
    scorer = Scorer(model, tok, locality_prompts(cases[args.edits:], args.locality_prompts,
                                                 [p.edit.subject for p in probes]))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"memit_mass_{args.model}"
    # The command that reproduces the whole table (kept rows are reused); a run with --only would misname it.
    reproduce = command_line([sys.argv[0], "--model", args.model, "--edits", str(args.edits),
                              "--locality-prompts", str(args.locality_prompts)])
    result: dict[str, Any] = {"model": args.model, "command": reproduce, "edits": args.edits,
                              "locality_prompts": args.locality_prompts, "torch_threads": torch.get_num_threads(),
                              "rows": []}
    path = stem.with_suffix(".json")
    result["rows"] = merged_rows(path, result, [])
    done = {row["variant"] for row in result["rows"]}
    chosen = [v for v in variants(args.edits) if not args.only or any(part in v.name for part in args.only)]
    cache: dict[tuple[Any, ...], Any] = {}
    for variant in chosen:
        if variant.name in done:
            logger.info("%s: kept from the last run", variant.name)
            continue
        row = run_variant(variant, model, tok, probes, scorer, cache) | {"command": command_line()}
        logger.info("%s", row)
        result["rows"] = merged_rows(path, result, [*result["rows"], row])
        path.write_text(json.dumps(result, indent=1))
    order = {v.name: i for i, v in enumerate(variants(args.edits))}
    result["rows"] = merged_rows(path, result, result["rows"])
    result["rows"].sort(key=lambda row: order.get(row["variant"], len(order)))
    path.write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(markdown(result))
    plot(result, stem.with_suffix(".png"))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
