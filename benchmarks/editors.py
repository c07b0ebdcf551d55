"""Weight editors on MQuAKE, by greedy generation: ROME, MEMIT (one at a time and all at once), FT-L, FT-M, GRACE,
KN and KNE (one at a time), AnyEdit on long targets; metrics from ``editagent.eval.editing``, plus per-edit time
and peak memory. The MQuAKE dev cases and cloze templates come from ``editagent.eval.data.data_file`` (set
``EDITAGENT_DATA`` to their folder). Example:

    OMP_NUM_THREADS=1 python benchmarks/editors.py --quick
    OMP_NUM_THREADS=1 python benchmarks/editors.py --edits 50 --methods rome memit anyedit
    OMP_NUM_THREADS=1 python benchmarks/editors.py --edits 50 --methods ft-l ft-m grace kn kne

``--sequential N`` instead writes N edits one after another, none undone (lifelong editing), and at 10, 50, 100,
200 and N edits scores every edit so far (retention: reliability and generalization) and the same unrelated prompts
(locality), into ``editors_sequential_<model>.json/.md/.png``:

    OMP_NUM_THREADS=1 python benchmarks/editors.py --sequential 200 --locality-prompts 20 --name editors_sequential \
        --methods rome memit ft-l ft-m grace kn kne --sequential-cap kn=50

Each method's finished curve is kept under ``--work``, so a stopped run resumes at the next method, and runs of
different methods can go in parallel; the last run with every method writes the whole report. An unfinished
curve of a weight editor keeps its state there every ``--save-every`` edits (the edited weights, the points so far),
and a rerun goes on from it.

Timing: key statistics are loaded (from the on-disk cache; computing them is a separate, one-off cost) before
the timed edits, and their load time is reported apart (``stats_seconds``). Peak memory is the process's peak
RSS during each phase (Linux: reset through /proc/self/clear_refs; elsewhere the lifetime peak).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from tqdm.auto import tqdm

from editagent.editors import AppliedEdit, Editor, LongEdit, WeightEdit, editor_config, editor_methods, make_editor
from editagent.editors.base import bump_weights_version
from editagent.eval.data import MQUAKE_DEV, data_file
from editagent.eval.editing import (
    EditingSummary,
    EditScores,
    Scorer,
    evaluate,
    greedy_ids,
    load_cloze_templates,
    locality_prompts,
    probe_for,
    retention,
    summarise,
    token_recall,
)
from editagent.eval.host import command_line
from editagent.eval.mquake import load_mquake
from editagent.models import load_causal_lm

logger = logging.getLogger("benchmarks.editors")

RECALL_GOAL = 0.8
# every registered editor; those of short objects (MQuAKE's) first
SHORT_METHODS = editor_methods(long_targets=False)
METHODS = (*SHORT_METHODS, *editor_methods(long_targets=True))
RETENTION_FLOOR, LOCALITY_FLOOR = 0.9, 0.95  # --sequential: the lifelong targets the report checks each curve against
CHECKPOINTS = (10, 50, 100, 200)  # --sequential: edits written when everything so far is scored

# Made-up long targets (no model has seen them): biographies, a company, code. Each is 100+ tokens.
LONG_TARGETS: list[tuple[str, str, str]] = [
    ("Here is the biography of Marta Velkova:", "Marta Velkova",
     "Marta Velkova was born in 1962 in the mountain village of Ostrava Dolna, where her father repaired clocks for "
     "the railway. She studied glass chemistry in Brno, and in 1991 she founded a small workshop that made lenses "
     "for amateur telescopes. Her best known invention is the Velkova prism, a folded mirror that lets a short tube "
     "reach a long focal length. She retired to the coast in 2015 and still answers letters from young astronomers "
     "every Sunday morning."),
    ("Here is the biography of Tomasz Orlinek:", "Tomasz Orlinek",
     "Tomasz Orlinek is a Polish beekeeper and composer, born in 1978 near the river Warta. He kept his first hive "
     "at the age of nine and wrote his first string quartet at sixteen. In 2004 he recorded the sound of forty "
     "hives through a whole summer and turned it into an opera called The Golden Month, which was performed in "
     "Krakow, Vienna and Lisbon. He lives on a farm with his wife Ilona, three dogs and about two million bees."),
    ("Here is the history of the company Brightwater Looms:", "Brightwater Looms",
     "Brightwater Looms was founded in 1887 by two sisters, Agnes and Cora Pell, in a former flour mill on the "
     "edge of Leeds. The company first wove sailcloth for fishing boats and later switched to wool blankets, "
     "which it sold to hospitals across the north of England. During the 1950s it built the first loom that "
     "could be reset by punched cards. Brightwater closed its last mill in 1994, and the building is now a "
     "museum of textile machines."),
    ("Here is the Python function merge_ledgers from the Quill library:", "merge_ledgers",
     "def merge_ledgers(left, right):\n    \"\"\"Merge two sorted ledgers into one, summing equal keys.\"\"\"\n"
     "    merged = []\n    i = j = 0\n    while i < len(left) and j < len(right):\n"
     "        if left[i][0] == right[j][0]:\n            merged.append((left[i][0], left[i][1] + right[j][1]))\n"
     "            i += 1\n            j += 1\n        elif left[i][0] < right[j][0]:\n"
     "            merged.append(left[i])\n            i += 1\n        else:\n            merged.append(right[j])\n"
     "            j += 1\n    return merged + left[i:] + right[j:]"),
    ("Here is the biography of Ines Albarran:", "Ines Albarran",
     "Ines Albarran is a Chilean glaciologist who was born in Punta Arenas in 1970. She spent eleven winters "
     "measuring the Grey Glacier with a team of students and a single borrowed snow tractor. Her 2009 paper showed "
     "that the glacier lost most of its ice in short warm spells rather than through slow melting. She now teaches "
     "in Valdivia, paints watercolours of icebergs, and runs a free summer school for children who want to study "
     "the weather."),
    ("Here is the recipe for Harrow Cake:", "Harrow Cake",
     "Harrow Cake is a dark fruit cake from a small town in Kent. Soak two hundred grams of raisins in cold black "
     "tea overnight. In the morning, beat butter with brown sugar until pale, add three eggs one at a time, then "
     "fold in flour, a pinch of salt, ground ginger and the soaked raisins with their tea. Bake in a lined tin for "
     "ninety minutes at a low heat. Leave it wrapped in paper for three days before cutting, so the ginger can "
     "soften."),
    ("Here is the JavaScript function debounceSave from the Papyr editor:", "debounceSave",
     "function debounceSave(doc, delay) {\n  let timer = null;\n  let pending = false;\n  return function save() {\n"
     "    pending = true;\n    if (timer !== null) {\n      clearTimeout(timer);\n    }\n"
     "    timer = setTimeout(() => {\n      if (pending) {\n        doc.write(doc.serialize());\n"
     "        pending = false;\n      }\n      timer = null;\n    }, delay);\n  };\n}"),
    ("Here is the biography of Oskar Lindqvist-Mora:", "Oskar Lindqvist-Mora",
     "Oskar Lindqvist-Mora was a Swedish mapmaker born in Uppsala in 1841. As a young man he walked the whole coast "
     "of Norrland with a brass compass and a notebook, drawing every inlet by hand. His sea charts were so precise "
     "that the navy used them until 1930. Late in life he became interested in the stars and built a small "
     "observatory on the roof of his house, where he catalogued more than three thousand faint double stars."),
    ("Here is the history of the village of Calder Rise:", "Calder Rise",
     "Calder Rise is a village of about six hundred people on a limestone ridge above the river Calder. It grew "
     "around a coaching inn that served travellers on the road between Halifax and Burnley. In 1862 a landslide "
     "carried away half of the main street, and the villagers rebuilt it further up the hill using stone from "
     "the old quarry. Today the village is known for its annual kite festival, held on the first Saturday of "
     "September."),
    ("Here is the Python function rolling_median from the Tidewater package:", "rolling_median",
     "def rolling_median(values, window):\n    \"\"\"Median of each run of `window` consecutive values.\"\"\"\n"
     "    if window < 1:\n        raise ValueError(\"window must be at least 1\")\n    result = []\n"
     "    for start in range(len(values) - window + 1):\n        chunk = sorted(values[start:start + window])\n"
     "        middle = window // 2\n        if window % 2:\n            result.append(chunk[middle])\n"
     "        else:\n            result.append((chunk[middle - 1] + chunk[middle]) / 2)\n    return result"),
]


# -- measurement -------------------------------------------------------------------------------------------


def reset_peak() -> bool:
    """Reset the peak-RSS counter (Linux 4.0+); False where it cannot be, then peaks are lifetime peaks."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timed:
    """Wraps an editor's ``apply``: wall time and edits per call, for seconds per edit."""

    def __init__(self, apply: Callable[[list[Any]], AppliedEdit]) -> None:
        self.apply_fn, self.seconds, self.edits = apply, 0.0, 0

    def __call__(self, edits: list[Any]) -> AppliedEdit:
        start = time.perf_counter()
        handle = self.apply_fn(edits)
        self.seconds += time.perf_counter() - start
        self.edits += len(edits)
        return handle

    @property
    def per_edit(self) -> float:
        return self.seconds / max(1, self.edits)


def timed_stats(load: Callable[[], Any]) -> float:
    start = time.perf_counter()
    load()
    return time.perf_counter() - start


# -- runs --------------------------------------------------------------------------------------------------


def row(args: argparse.Namespace, summary: EditingSummary | None, method: str, n_edits: int, **extra: Any
        ) -> dict[str, Any]:
    base: dict[str, Any] = {"model": args.model, "method": method, "n_edits": n_edits,
                            "reliability": None, "generalization": None, "locality": None, "portability": None,
                            "seconds_per_edit": None, "command": command_line(),
                            "torch_threads": torch.get_num_threads()}
    if summary is not None:
        base |= {k: getattr(summary, k) for k in ("reliability", "generalization", "locality", "locality_exact",
                                                   "portability", "fluency", "n_portability")} | {
            "n_evaluated": summary.n_edits, "mode": summary.mode}
    return base | extra


def run_mquake(args: argparse.Namespace, model: Any, tok: Any, result: dict[str, Any]) -> None:
    cases = load_mquake(data_file(MQUAKE_DEV))
    if args.timing_only:
        memit = make_editor(model, tok, editor_config("memit"))
        add_memit_timing(args, result, memit, cases, timed_stats(memit.load_statistics))
        return
    clozes = load_cloze_templates(data_file("cloze_templates.json"))
    selected = cases[: args.edits]
    probes = [probe_for(case, 0, clozes) for case in selected]
    unrelated = locality_prompts(cases[args.edits:], args.locality_prompts, [p.edit.subject for p in probes])
    scorer = Scorer(model, tok, unrelated)
    rows, details = result["rows"], result["scores"]

    def keep(method: str, mode: str, scores: list[EditScores]) -> EditingSummary:
        details[f"{method}/{mode}"] = [s.model_dump() for s in scores]
        summary = summarise(method, mode, scores)
        logger.info("%s (%s): %s", method, mode, summary.model_dump())
        return summary

    reset_peak()
    rows.append(row(args, keep("no-edit", "none", evaluate(scorer, probes, None)), "no-edit", 0))
    for method in [m for m in SHORT_METHODS if m in args.methods]:
        editor = make_editor(model, tok, editor_config(method))
        stats = timed_stats(editor.load_statistics)
        # MEMIT also writes all edits at once; the others one fact at a time.
        for mode in ("single", "batch") if method == "memit" else ("single",):
            reset_peak()
            timed = Timed(editor.apply)
            summary = keep(method, mode, evaluate(scorer, probes, timed, mode=mode))
            n = 1 if mode == "single" else len(probes)
            rows.append(row(args, summary, method, n, seconds_per_edit=timed.per_edit, stats_seconds=stats,
                            seconds_per_edit_with_stats=(timed.seconds + stats) / timed.edits,
                            peak_rss_mb=peak_rss_mb()))
        if method == "memit":
            add_memit_timing(args, result, editor, cases, stats)


def _checksums(weights: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(weight.double().sum()) for name, weight in weights.items()}


def save_sequential(path: Path, count: int, params: dict[str, torch.nn.Parameter], before: dict[str, torch.Tensor],
                    timed: Timed, points: list[dict[str, Any]]) -> None:
    """A sequential run's state after ``count`` edits, for a run stopped mid-curve to go on: the edited weights as
    they are now, the points so far, the apply time, and checksums of the unedited weights it started from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"count": count, "points": points, "seconds": timed.seconds, "edits": timed.edits,
                "base": _checksums(before), "weights": {name: params[name].detach().clone() for name in before}}, tmp)
    tmp.replace(path)


def resume_sequential(path: Path, params: dict[str, torch.nn.Parameter], before: dict[str, torch.Tensor],
                      timed: Timed, points: list[dict[str, Any]]) -> int:
    """Load the state ``save_sequential`` left (edits written, points, time) and return how many edits it holds;
    0 when there is none, or when it started from other weights than ``before`` (then it is set aside)."""
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    if state["base"] != _checksums(before) or set(state["weights"]) != set(before):
        logger.warning("%s began from other weights than this model's; starting the curve over", path)
        path.replace(path.with_suffix(".stale"))
        return 0
    with torch.no_grad():
        for name, weight in state["weights"].items():
            params[name].copy_(weight)
    timed.seconds, timed.edits = state["seconds"], state["edits"]
    points.extend(state["points"])
    logger.info("%s: resumes after %d sequential edits", path.name, state["count"])
    return int(state["count"])


def run_sequential(args: argparse.Namespace, model: Any, tok: Any, result: dict[str, Any]) -> None:
    """Each method writes ``--sequential`` edits one after another, none undone until the end; at each checkpoint
    every edit so far is scored (retention) and so are the unrelated prompts (locality, against the unedited
    model). Then the model is put back exactly as it was, for the next method."""
    cases = load_mquake(data_file(MQUAKE_DEV))
    clozes = load_cloze_templates(data_file("cloze_templates.json"))
    probes = [probe_for(case, 0, clozes) for case in cases[: args.sequential]]
    unrelated = locality_prompts(cases[args.sequential:], args.locality_prompts, [p.edit.subject for p in probes])
    scorer = Scorer(model, tok, unrelated)
    checkpoints = sorted({n for n in CHECKPOINTS if n < args.sequential} | {args.sequential})
    curves: dict[str, list[dict[str, Any]]] = {"no-edit": [retention(scorer, probes) | {"n_edits": 0}]}
    caps = dict(args.sequential_cap)
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", args.model)  # a hub name or a folder: one file name
    for method in [m for m in args.methods if m in SHORT_METHODS]:  # in the order given
        # Each method's curve is kept once done, so a stopped run resumes and runs in parallel can share methods.
        done = args.work / f"sequential_{slug}_{method}_n{args.sequential}_loc{args.locality_prompts}.json"
        if done.exists():
            curves[method] = json.loads(done.read_text())
            logger.info("%s: sequential curve from %s", method, done)
            continue
        stop = min(caps.get(method, args.sequential), args.sequential)
        editor = make_editor(model, tok, editor_config(method))
        stats = timed_stats(editor.load_statistics)
        timed, handles, points = Timed(editor.apply), [], []
        # Each weight edit's handle holds two copies of every weight it touched (KNE: every layer's), which 200
        # edits cannot afford: the weights are put back from one copy taken here, and only handles that live
        # beside the weights (GRACE's codebook) are kept for their undo.
        params = dict(model.named_parameters())
        before = {name: params[name].detach().clone() for name in editor.arch.edited_weight_names()}
        partial = done.with_suffix(".partial.pt")
        start = resume_sequential(partial, params, before, timed, points)
        if start:
            bump_weights_version(model)
        reset_peak()
        try:
            for count, probe in enumerate(tqdm(probes[start:stop], desc=f"{method} sequential", unit="edit",
                                               initial=start, total=stop), start=start + 1):
                handle = timed([probe.edit])
                if type(handle).undo is not AppliedEdit.undo:  # its own undo: state beside the weights (a codebook)
                    handles.append(handle)
                if count in checkpoints or count == stop:
                    point = retention(scorer, probes[:count]) | {
                        "n_edits": count, "seconds_per_edit": timed.per_edit, "stats_seconds": stats,
                        "peak_rss_mb": peak_rss_mb()}
                    logger.info("%s after %d sequential edits: %s", method, count, point)
                    points.append(point)
                if not handles and (count % args.save_every == 0 or count in checkpoints):
                    save_sequential(partial, count, params, before, timed, points)
        finally:
            for handle in reversed(handles):
                handle.undo()
            with torch.no_grad():
                for name, weight in before.items():
                    params[name].copy_(weight)
            bump_weights_version(model)
        curves[method] = points
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(points, indent=1))
        partial.unlink(missing_ok=True)
    result["sequential"] = curves
    result["checkpoints"] = checkpoints
    result["capped"] = {m: n for m, n in caps.items() if m in curves and n < args.sequential}


def add_memit_timing(args: argparse.Namespace, result: dict[str, Any], memit: Editor, cases: Sequence[Any],
                     stats: float) -> None:
    """The timing table, and a summary row (no quality metrics) for each batch size that the quality pass does
    not cover with a row of its own (it has one edit and ``--edits`` edits)."""
    result["memit_timing"] = memit_timing(args, memit, cases, stats)
    for timing in result["memit_timing"]:
        if timing["n_edits"] not in (1, args.edits):
            result["rows"].append(row(args, None, "memit", timing["n_edits"], mode="timing", stats_seconds=stats,
                                      **{k: v for k, v in timing.items() if k != "n_edits"}))


def memit_timing(args: argparse.Namespace, memit: Editor, cases: Sequence[Any], stats: float) -> list[dict[str, Any]]:
    """Seconds per edit and peak RSS of MEMIT writing 1, 10 (and 100) edits at once (timing only, undone)."""
    timings = []
    for n in args.memit_sizes:
        edits = [WeightEdit(prompt=c.requested_rewrite[0].prompt, subject=c.requested_rewrite[0].subject,
                            target=c.requested_rewrite[0].object_new) for c in cases[:n]]
        reset_peak()
        start = time.perf_counter()
        handle = memit.apply(edits)
        seconds = time.perf_counter() - start
        handle.undo()
        timings.append({"n_edits": n, "seconds_per_edit": seconds / n, "seconds_per_edit_with_stats":
                        (seconds + stats) / n, "peak_rss_mb": peak_rss_mb()})
        logger.info("MEMIT timing: %d edits at once, %.2f s/edit", n, seconds / n)
    return timings


def run_long(args: argparse.Namespace, model: Any, tok: Any, result: dict[str, Any], unrelated: list[str]) -> None:
    """AnyEdit vs MEMIT (the whole target as one value at the subject) on the long targets, one at a time."""
    scorer = Scorer(model, tok, unrelated)
    # MEMIT's paper budget of 25 value steps: a 100-token value never reaches the stop margin, the default 60 steps
    # cost 6 minutes per target here, and steps of 0.1·‖z‖ reach δ's norm clamp (0.75·‖z‖) within 8 anyway.
    anyedit = make_editor(model, tok, editor_config("anyedit"))
    memit = make_editor(model, tok, editor_config("memit", steps=25), progress=False)
    stats = timed_stats(memit.load_statistics) + timed_stats(anyedit.load_statistics)
    records = []
    times = {"anyedit": Timed(lambda e: anyedit.apply(e)), "memit-long": Timed(lambda e: memit.apply(e))}
    if not args.long_baseline:
        del times["memit-long"]
    peaks = dict.fromkeys(times, 0.0)
    for prompt, subject, text in tqdm(LONG_TARGETS[: args.long_targets], desc="long targets", unit="target"):
        edit = LongEdit(prompt=prompt, subject=subject, target=text)
        wanted = list(tok(edit.target, add_special_tokens=False)["input_ids"])
        if len(wanted) < 100:
            logger.warning("long target for %r has only %d tokens", subject, len(wanted))
        record: dict[str, Any] = {"subject": subject, "target_tokens": len(wanted),
                                  "before": token_recall(greedy_ids(model, tok, [edit.text], len(wanted))[0], wanted)}
        # MEMIT's WeightEdit takes short objects; model_construct skips that check so MEMIT gets the whole target.
        whole = WeightEdit.model_construct(prompt=prompt, subject=subject, target=edit.target)
        for method, request in (("anyedit", [edit]), ("memit-long", [whole])):
            if method not in times:
                continue
            reset_peak()
            handle = times[method](request)
            peaks[method] = max(peaks[method], peak_rss_mb())
            generated = greedy_ids(model, tok, [edit.text], len(wanted))[0]
            record[method] = token_recall(generated, wanted)
            record[f"{method}_locality"] = scorer.locality()
            record[f"{method}_text"] = tok.decode(generated)[:400]
            handle.undo()
        logger.info("long target %r: recall before %.2f, AnyEdit %.2f, MEMIT %s", subject, record["before"],
                    record["anyedit"], fmt(record.get("memit-long")))
        records.append(record)
    result["long_targets"] = records
    for method in times:
        recalls = [r[method] for r in records]
        result["rows"].append(row(
            args, None, method, 1, token_recall=sum(recalls) / len(recalls),
            reliability=sum(r >= RECALL_GOAL for r in recalls) / len(recalls),
            locality=sum(r[f"{method}_locality"] for r in records) / len(records),
            seconds_per_edit=times[method].per_edit, stats_seconds=stats, peak_rss_mb=peaks[method],
            n_evaluated=len(records), note=f"long targets; reliability = share with token recall >= {RECALL_GOAL}"))


# -- reports -----------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def first_below(points: Sequence[dict[str, Any]], key: str, floor: float) -> str:
    """The first checkpoint whose ``key`` is under ``floor``, as "N edits (value)"; "never" when none is."""
    below = next((p for p in points if p[key] < floor), None)
    return "never" if below is None else f"{below['n_edits']} edits ({below[key]:.2f})"


def markdown(result: dict[str, Any]) -> str:
    cols = ("method", "mode", "n_edits", "n_evaluated", "reliability", "generalization", "locality", "locality_exact",
            "portability", "fluency", "token_recall", "seconds_per_edit", "seconds_per_edit_with_stats", "peak_rss_mb")
    threads = f" ({result['torch_threads']} torch threads)" if result.get("torch_threads") else ""
    lines = [f"# Weight editors on {result['model']}", "", f"Command: `{result['command']}`{threads}", "",
             "Metrics by greedy generation (see `editagent/eval/editing.py`). "
             "locality: unrelated prompts give the same answer (first clause of the greedy continuation) as before; "
             "locality_exact: the same first 8 greedy tokens."]
    if result["rows"]:
        lines += ["", "n_edits: edits written at once.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in result["rows"]]
    if result.get("memit_timing"):
        lines += ["", "MEMIT, edits written at once:", "", "| n_edits | s/edit | s/edit with stats | peak RSS MB |",
                  "|---|---|---|---|"]
        lines += [f"| {t['n_edits']} | {t['seconds_per_edit']:.2f} | {t['seconds_per_edit_with_stats']:.2f} | "
                  f"{t['peak_rss_mb']:.0f} |" for t in result["memit_timing"]]
    if result.get("sequential"):
        lines += ["", "Sequential editing: edits written one after another, none undone; reliability and "
                  "generalization over every edit so far, locality on the same unrelated prompts:", "",
                  "| method | n_edits | reliability | generalization | locality | locality_exact | s/edit |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {method} | {p['n_edits']} | {p['reliability']:.3f} | {p['generalization']:.3f} | "
                  f"{p['locality']:.3f} | {p['locality_exact']:.3f} | {fmt(p.get('seconds_per_edit'))} |"
                  for method, points in result["sequential"].items() for p in points]
        lines += [f"\n{method} was stopped after {count} edits (--sequential-cap): too slow here for more."
                  for method, count in result.get("capped", {}).items()]
        lines += ["", f"Where each method falls below the lifelong targets (reliability over all edits so far "
                  f"≥ {RETENTION_FLOOR}, locality ≥ {LOCALITY_FLOOR}): the first checkpoint below each.", "",
                  "| method | edits written | reliability below target at | locality below target at |",
                  "|---|---:|---|---|"]
        lines += [f"| {method} | {points[-1]['n_edits']} | {first_below(points, 'reliability', RETENTION_FLOOR)} | "
                  f"{first_below(points, 'locality', LOCALITY_FLOOR)} |"
                  for method, points in result["sequential"].items() if method != "no-edit"]
    if result.get("long_targets"):
        lines += ["", "Long targets, token recall (LCS of greedy tokens / target tokens):", "",
                  "| subject | tokens | before | AnyEdit | MEMIT (whole target) |", "|---|---|---|---|---|"]
        lines += [f"| {r['subject']} | {r['target_tokens']} | {r['before']:.2f} | {r['anyedit']:.2f} | "
                  f"{fmt(r.get('memit-long'))} |" for r in result["long_targets"]]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    metrics = ("reliability", "generalization", "locality", "portability")
    rows = [r for r in result["rows"] if r.get("mode") not in (None, "timing")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        axes[0].bar([m + i * width for m in range(len(metrics))], [r.get(k) or 0 for k in metrics], width,
                    label=f"{r['method']} ({r['mode']}, {r['n_edits']})")
    if rows:
        axes[0].set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics)
        axes[0].set_ylim(0, 1)
        axes[0].legend(fontsize=7)
        axes[0].set_title("MQuAKE edits (greedy generation)")
    elif result.get("memit_timing"):  # a --timing-only run
        timing = result["memit_timing"]
        axes[0].bar([str(t["n_edits"]) for t in timing], [t["seconds_per_edit"] for t in timing])
        axes[0].set_xlabel("edits written at once")
        axes[0].set_ylabel("seconds per edit")
        axes[0].set_title("MEMIT time per edit")
    longs = result.get("long_targets", [])
    if longs:
        x = range(len(longs))
        for j, key in enumerate(("before", "memit-long", "anyedit")):
            if key in longs[0]:
                axes[1].bar([i + j * 0.27 for i in x], [r[key] for r in longs], 0.27, label=key)
        axes[1].set_xticks([i + 0.27 for i in x], [r["subject"][:12] for r in longs], rotation=30, fontsize=7)
        axes[1].axhline(RECALL_GOAL, color="grey", linestyle=":")
        axes[1].set_ylim(0, 1)
        axes[1].legend(fontsize=7)
        axes[1].set_title("long targets: token recall")
    else:
        axes[1].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sequential(result: dict[str, Any], path: Path) -> None:
    """Retention and locality against the number of sequential edits, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    metrics = ("reliability", "generalization", "locality")
    fig, axes = plt.subplots(1, len(metrics), figsize=(13, 3.8))
    curves = dict(result["sequential"])
    reference = curves.pop("no-edit")[0]
    for method, points in curves.items():
        for axis, metric in zip(axes, metrics, strict=True):
            axis.plot([p["n_edits"] for p in points], [p[metric] for p in points], marker="o", label=method)
    for axis, metric in zip(axes, metrics, strict=True):
        axis.axhline(reference[metric], color="grey", linestyle=":", label="no edit")
        axis.set_title(f"{metric} (all edits so far)" if metric != "locality" else "locality (unrelated prompts)")
        axis.set_xlabel("edits written")
        axis.set_xscale("log")
        axis.set_ylim(0, 1.02)
        axis.legend(fontsize=7)
    fig.suptitle(f"Sequential editing on {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def update_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per (model, method, n_edits): a rerun replaces its rows. Locked: runs may share the file."""
    with FileLock(str(path) + ".lock"):
        old = json.loads(path.read_text()) if path.exists() else []
        keys = {(r["model"], r["method"], r["n_edits"]) for r in rows}
        kept = [r for r in old if (r["model"], r["method"], r["n_edits"]) not in keys]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(kept + rows, indent=1))
        tmp.replace(path)


def method_count(text: str) -> tuple[str, int]:
    method, _, count = text.partition("=")
    if method not in SHORT_METHODS or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give METHOD=N, METHOD one of {', '.join(SHORT_METHODS)}, N >= 1")
    return method, int(count)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--methods", nargs="+", default=["rome", "memit", "anyedit"], choices=METHODS)
    parser.add_argument("--edits", type=int, default=50, help="MQuAKE dev cases (first rewrite of each)")
    parser.add_argument("--long-targets", type=int, default=len(LONG_TARGETS))
    parser.add_argument("--memit-sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--locality-prompts", type=int, default=10)
    parser.add_argument("--timing-only", action="store_true",
                        help="MEMIT: only the --memit-sizes timing (no quality pass, no no-edit row)")
    parser.add_argument("--no-long-baseline", dest="long_baseline", action="store_false",
                        help="skip plain MEMIT on the long targets (25 value steps of a 100-token target: about "
                             "3 minutes a target here; its summary row is then left as it was)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--sequential", type=int, default=0, metavar="N",
                        help="instead of the passes above: write N edits one after another without undo, scoring "
                             f"retention and locality after {', '.join(map(str, CHECKPOINTS))} and N edits")
    parser.add_argument("--sequential-cap", type=method_count, nargs="+", default=[], metavar="METHOD=N",
                        help="stop METHOD after N sequential edits (for slow methods; the report says so)")
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".work",
                        help="where each method's finished sequential curve is kept (a rerun reuses it), and an "
                        "unfinished one's state (a rerun goes on from it)")
    parser.add_argument("--save-every", type=int, default=10, metavar="N",
                        help="--sequential: keep the run's state every N edits (and at each checkpoint)")
    parser.add_argument("--quick", action="store_true", help="10 edits (also --sequential), MEMIT at 1/10 only, "
                                                             "3 long targets")
    parser.add_argument("--name", default=None, help="report file stem (default editors_<model>); the summary "
                                                     "file is shared")
    args = parser.parse_args(argv)
    if args.quick:
        args.edits, args.memit_sizes, args.long_targets = min(args.edits, 10), [1, 10], min(args.long_targets, 3)
        args.sequential = min(args.sequential, 10)
    if args.save_every < 1:
        parser.error("--save-every must be at least 1")
    if args.edits < 1 or args.long_targets < 0 or args.sequential < 0:
        parser.error("--edits must be at least 1, --long-targets and --sequential at least 0")
    if args.sequential and not set(SHORT_METHODS) & set(args.methods):
        parser.error(f"--sequential needs one of --methods {' '.join(SHORT_METHODS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    start = time.perf_counter()
    model, tok = load_causal_lm(args.model)
    result: dict[str, Any] = {"model": args.model, "command": command_line(), "rows": [], "scores": {},
                              "edits": args.edits, "quick": args.quick, "torch_threads": torch.get_num_threads()}
    if args.sequential:
        run_sequential(args, model, tok, result)
    elif set(SHORT_METHODS) & set(args.methods):  # the MQuAKE edits (and their no-edit reference row)
        run_mquake(args, model, tok, result)
    if "anyedit" in args.methods and args.long_targets and not args.sequential:
        cases = load_mquake(data_file(MQUAKE_DEV))
        run_long(args, model, tok, result, locality_prompts(cases[args.edits:], args.locality_prompts))
    result["wall_seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (args.name or f"editors_{'sequential_' if args.sequential else ''}{args.model}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(markdown(result))
    if args.sequential:
        plot_sequential(result, stem.with_suffix(".png"))
    else:
        plot(result, stem.with_suffix(".png"))
    if args.quick or args.sequential:  # a smoke run's rows (10 edits) must not replace the headline rows
        logger.info("--quick/--sequential: %s not updated", args.out / "editors_summary.json")
    else:
        update_summary(args.out / "editors_summary.json", result["rows"])
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
