"""The editor families side by side on the same MQuAKE cases (issue 22): the edit memory with the editagent method,
in-context editing (IKE, SERAC) and edits written into the weights (ROME, MEMIT, MEND, CaKE, and the others where
their runs exist).

It gathers what the other benchmarks wrote, so every figure keeps its own command:
- multi-hop accuracy and seconds per question: ``mquake_<model>_<method>_k1_n120_s0.json`` (``benchmarks/mquake.py
  --method M --k 1 --cases 120 --seed 0``; a weight method's seconds include writing and undoing the case's edits);
- locality: for weight editors the editing metric on 50 dev edits and 20 unrelated prompts (``editors_summary.json``,
  from ``benchmarks/editors.py``); for the memory and in-context methods the agreement with the plain model on
  single-hop questions no edit touches, all dev edits in one memory (``locality*.json``, ``benchmarks/ripple.py``);
- seconds per edit: the editors' metric run, and for the memory (and IKE and SERAC, which read the same memory) the
  time to store one edit;
- what undoing one edit costs: measured here with ``--measure-undo`` (one real edit per method on the model, undone,
  the weights compared bit for bit; one stored edit deleted from a memory of 150 cases' edits), kept in
  ``families_undo.json`` and reused.

    python benchmarks/families.py --measure-undo     # once (a few minutes), then:
    python benchmarks/families.py
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from editagent.editors.registry import editor_methods
from editagent.eval.host import command_line

logger = logging.getLogger("benchmarks.families")

# (family, method, how it is undone)
ROWS = (
    ("memory", "agent", "delete the stored edit (it stays in history); nothing else changed"),
    ("in-context", "ike", "delete the stored edit; IKE reads the memory at each question"),
    ("in-context", "serac", "delete the stored edit; SERAC reads the memory at each question"),
    ("weights: locate and edit", "rome", "restore the touched weight from a kept copy"),
    ("weights: locate and edit", "memit", "restore the touched weights from kept copies"),
    ("weights: meta-learning", "mend", "restore the touched weights from kept copies"),
    ("weights: circuit-aware fine-tuning", "cake", "restore the touched weights from kept copies"),
    ("weights: codebook adaptor", "grace", "drop the edit's codebook entries"),
    ("weights: fine-tuning", "ft-m", "restore the touched weight from a kept copy"),
    ("weights: fine-tuning", "ft-l", "restore the touched weight from a kept copy"),
    ("weights: locate and edit", "kne", "restore the touched weights from kept copies"),
    ("weights: locate and edit", "kn", "restore the touched weights from kept copies"),
)
MEMORY_METHODS = ("agent", "ike", "serac")
UNDO_FILE = "families_undo.json"


def mquake_run(results: Path, model: str, method: str) -> dict[str, Any] | None:
    path = results / f"mquake_{model}_{method}_k1_n120_s0.json"
    return json.loads(path.read_text()) if path.exists() else None


def beyond_targets(run: dict[str, Any], targets: dict[int, set[str]]) -> int:
    """Cases answered right with an answer that is no edit's own new object: a hop after the edited one was
    inferred, not only the new object said again (in most dev cases the edited hop is the last, so saying the new
    object is the right answer)."""
    return sum(any(question["correct"] and question["answer"] not in targets.get(case["case_id"], set())
                   for question in case["questions"]) for case in run["cases"])


def edit_targets(dataset: str | None) -> dict[int, set[str]]:
    """Case id -> the new objects of its edits, from the dev cases (empty where the data cannot be found)."""
    from editagent.eval import MQUAKE_DEV, data_file
    from editagent.eval.data import DataUnavailable
    from editagent.eval.mquake import load_mquake

    try:
        cases = load_mquake(dataset or data_file(MQUAKE_DEV))
    except DataUnavailable as error:
        logger.warning("no dev cases (%s): the column of inferred answers is left empty", error)
        return {}
    return {case.case_id: {rewrite.object_new for rewrite in case.requested_rewrite} for case in cases}


def editing_row(results: Path, model: str, method: str) -> dict[str, Any] | None:
    """The editors' one-at-a-time row of ``method`` (the 50 dev edits), if run."""
    path = results / "editors_summary.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    found = [row for row in rows if row.get("model") == model and row.get("method") == method
             and row.get("n_edits") == 1]
    return found[-1] if found else None


def locality_row(results: Path, method: str) -> dict[str, Any] | None:
    path = results / ("locality.json" if method == "agent" else f"locality_{method}.json")
    return json.loads(path.read_text()) if path.exists() else None


# -- measuring undo ----------------------------------------------------------------------------------------------

def held_bytes(handle: Any) -> int:
    """Memory an applied edit keeps so it can be undone: the copies of the weights it touched (a GRACE edit keeps
    its codebook entries instead)."""
    tensors = list(getattr(handle, "originals", {}).values())
    entries = getattr(handle, "entries", None)
    if entries is not None:
        tensors += [value for value in vars(entries).values() if hasattr(value, "element_size")]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def measure_weight_undo(model_name: str, methods: list[str], n_edits: int) -> dict[str, dict[str, Any]]:
    """Per method: ``n_edits`` real edits applied one at a time and each undone; seconds to apply and to undo
    (medians), bytes held for undo, and whether every weight came back bit for bit."""
    import torch

    from editagent.editors.config import editor_config
    from editagent.editors.registry import make_editor
    from editagent.eval import MQUAKE_DEV, data_file
    from editagent.eval.editing import rewrite_to_edit
    from editagent.eval.mquake import load_mquake
    from editagent.llm import TransformersLLM

    llm = TransformersLLM.load(model_name)
    cases = load_mquake(data_file(MQUAKE_DEV))[:n_edits]
    edits = [rewrite_to_edit(case.requested_rewrite[0]) for case in cases]
    before = {name: param.detach().clone() for name, param in llm.model.named_parameters()}
    found = {}
    for method in methods:
        editor = make_editor(llm.model, llm.tokenizer, editor_config(method))
        applied, undone, held, exact = [], [], [], True
        for edit in edits:
            start = time.perf_counter()
            handle = editor.apply([edit])
            applied.append(time.perf_counter() - start)
            held.append(held_bytes(handle))
            start = time.perf_counter()
            handle.undo()
            undone.append(time.perf_counter() - start)
            exact = exact and all(torch.equal(param, before[name]) for name, param in llm.model.named_parameters())
        found[method] = {"apply_seconds": round(statistics.median(applied), 2),
                         "undo_seconds": round(statistics.median(undone), 4),
                         "held_bytes": int(statistics.median(held)), "bit_exact": exact,
                         "n_edits": len(edits)}
        logger.info("%s: %s", method, found[method])
    return found


def measure_memory_undo(n_cases: int, n_deletes: int) -> dict[str, Any]:
    """One edit stored and one deleted at a time, in a memory already holding ``n_cases`` cases' edits."""
    from editagent.eval import MQUAKE_DEV, data_file
    from editagent.eval.mquake import load_mquake
    from editagent.memory import EditMemory
    from editagent.models import load_embedder

    cases = load_mquake(data_file(MQUAKE_DEV))
    with tempfile.TemporaryDirectory() as folder:
        memory = EditMemory(Path(folder) / "store", embedder=load_embedder())
        memory.add([edit for case in cases[:n_cases] for edit in case.edits("bench")], progress=True)
        fresh = [edit for case in cases[n_cases: n_cases + n_deletes] for edit in case.edits("bench")][:n_deletes]
        added, deleted = [], []
        for edit in fresh:
            start = time.perf_counter()
            memory.add(edit)
            added.append(time.perf_counter() - start)
        for edit in fresh:
            start = time.perf_counter()
            memory.delete(edit.id)
            deleted.append(time.perf_counter() - start)
        stored = len(memory.edits("bench"))
        memory.close()
    return {"add_seconds": round(statistics.median(added), 4), "delete_seconds": round(statistics.median(deleted), 4),
            "held_bytes": 0, "bit_exact": True, "n_edits": len(fresh), "stored_before": stored}


# -- the page ----------------------------------------------------------------------------------------------------

def gather(results: Path, model: str, targets: dict[int, set[str]], undo: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method with an MQuAKE run, or with both an editing row and an undo measurement."""
    rows = []
    for family, method, how in ROWS:
        run = mquake_run(results, model, method)
        memory_method = method in MEMORY_METHODS
        locality = locality_row(results, method) if memory_method else editing_row(results, model, method)
        cost = undo.get("memory" if memory_method else method, {})
        if run is None and not (locality and cost):
            continue
        mquake = run["summary"] if run else {}  # a row whose MQuAKE run is not done shows its other columns
        rows.append({
            "family": family, "method": method, "multi_hop_acc": mquake.get("multi_hop_acc"),
            "n_cases": mquake.get("n_cases"), "seconds_per_question": mquake.get("seconds_per_question"),
            "right_beyond_edit_targets": beyond_targets(run, targets) if run and targets else None,
            "locality": (locality.get("agreement") if memory_method else locality.get("locality"))
            if locality else None,
            "locality_measure": ("unedited single-hop questions, all dev edits stored" if memory_method
                                 else "20 unrelated prompts after each of 50 edits") if locality else None,
            "seconds_per_edit": (cost.get("add_seconds") if memory_method
                                 else (locality or {}).get("seconds_per_edit") or cost.get("apply_seconds")),
            "undo": how, "undo_seconds": cost.get("delete_seconds" if memory_method else "undo_seconds"),
            "undo_held_mb": round(cost["held_bytes"] / 2**20, 3) if "held_bytes" in cost else None,
            "undo_bit_exact": cost.get("bit_exact"),
            "command": mquake.get("command"),
        })
    return rows


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if value < 1 else f"{value:.{max(1, digits - 2)}f}"
    return str(value)


def render(rows: list[dict[str, Any]], model: str, undo: dict[str, Any]) -> str:
    lines = [f"# Editor families on MQuAKE: {model}, k=1, 120 dev cases, seed 0", "",
             "Each case's edits are given alone (k=1), then its three multi-hop phrasings are asked; a case is right "
             "if any phrasing gets the new answer. The memory and in-context methods store the edits; the weight "
             "methods write them into the model, answer with the plain model, and undo them. Times are wall time "
             "on 2 shared CPU cores with one torch thread, with other runs alongside: rough, compare ratios.", "",
             "| family | method | multi-hop acc | right, beyond the new objects | locality | s / edit | s / question "
             "| undo | s / undo | MB held for undo | undo exact |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for row in rows:
        beyond = row["right_beyond_edit_targets"]
        inferred = "-" if beyond is None else f"{beyond} / {row['n_cases']}"
        accuracy = "not run yet" if row["multi_hop_acc"] is None else row["multi_hop_acc"]
        lines.append(f"| {row['family']} | {row['method']} | {accuracy} | {inferred} | "
                     f"{_cell(row['locality'])} | "
                     f"{_cell(row['seconds_per_edit'])} | {_cell(row['seconds_per_question'])} | {row['undo']} | "
                     f"{_cell(row['undo_seconds'])} | {_cell(row['undo_held_mb'])} | "
                     f"{_cell(row['undo_bit_exact'])} |")
    lines += ["", "*Right, beyond the new objects*: cases answered right with an answer that is none of the case's "
              "new objects. In most dev cases the edited hop is the last one, so the right answer is the new object "
              "itself and a method that says it whenever the relation comes up scores there without chaining; this "
              "column counts only the answers that needed a hop after the edited one.", "",
              "Locality is measured two ways, each the family's natural one: for weight editors, the share of 20 "
              "unrelated prompts whose greedy answer is unchanged after each of 50 dev edits (`benchmarks/"
              "editors.py`); for the memory and in-context methods, the share of single-hop questions no edit "
              "touches that get the plain model's answer while every dev edit is stored (`benchmarks/ripple.py`). "
              "A weight edit changes the model for every question; a stored edit changes only the questions that "
              "retrieve it.", "",
              "Seconds per question of a weight method include writing and undoing the case's edits (the MQuAKE "
              "runner times the whole group); seconds per edit come from the editing-metric run. For the memory, "
              "seconds per edit is storing one edit (embedding, SQLite, FAISS) and undo is deleting it.", ""]
    if undo:
        commands = undo.get("commands", ["python benchmarks/families.py --measure-undo"])
        lines += [f"Undo measured by {' then '.join(f'`{c}`' for c in commands)}: one "
                  "real edit per method applied and undone on the model, every parameter compared bit for bit "
                  "with the original; the memory's figures are one edit stored and deleted at a time in a memory "
                  f"holding {undo.get('memory', {}).get('stored_before', '?')} edits.", ""]
    lines += ["Commands:", ""] + [f"- `{row['command']}`" for row in rows if row.get("command")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dataset", help="the MQuAKE file of the runs (default: the dev cases)")
    parser.add_argument("--measure-undo", action="store_true", help="measure undo costs first (loads the model)")
    parser.add_argument("--undo-methods", nargs="+", default=list(editor_methods(long_targets=False)),
                        choices=editor_methods(),
                        help="weight methods to measure; earlier measurements of the others are kept")
    parser.add_argument("--undo-edits", type=int, default=2, help="edits per method for --measure-undo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    undo_path = args.results / UNDO_FILE
    undo = json.loads(undo_path.read_text()) if undo_path.exists() else {}
    if args.measure_undo:
        undo |= measure_weight_undo(args.model, args.undo_methods, args.undo_edits)
        undo["memory"] = measure_memory_undo(150, 20)
        undo["commands"] = [*undo.get("commands", []), command_line()]
        undo_path.write_text(json.dumps(undo, indent=1))
    rows = gather(args.results, args.model, edit_targets(args.dataset), undo)
    (args.results / "families.json").write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
    (args.results / "families.md").write_text(render(rows, args.model, undo))
    logger.info("%d rows -> %s", len(rows), args.results / "families.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
