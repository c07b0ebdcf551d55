"""The MQuAKE benchmark's parameter-editor methods, end to end on a tiny saved model.

A tiny random Llama cannot answer MQuAKE, so this checks the plumbing only: every case is
edited, answered directly (no decomposition) and recorded. Undo is tested in test_editors.py;
the real model's numbers come from ``benchmarks/mquake.py --method rome``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from _models import packaged_tokenizer, tiny_config
from test_editors import TOKENIZER, assert_same_weights, sharp_model, snapshot

from editagent.eval import MQUAKE_DEV, data_file
from editagent.eval.mquake import load_mquake


def benchmark_module(script: str) -> Any:
    """``benchmarks/<script>.py`` as a module (benchmarks/ holds scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{script}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark_main(script: str = "mquake") -> Callable[[Sequence[str]], int]:
    return benchmark_module(script).main


# Short runs: the plumbing is what is tested. ROME/MEMIT also sample their key statistics from this tiny model.
OPTIONS = {"rome": ["stats_tokens=2000", "steps=4"], "memit": ["stats_tokens=2000", "steps=4"], "ft-m": ["steps=4"],
           "grace": ["steps=4"], "kne": ["steps=4"]}


def saved_tiny_llama(tmp_path: Path) -> Path:
    """A tiny random Llama saved with the packaged tokenizer; call it before moving ``EDITAGENT_CACHE`` (the packaged
    model is converted, once, in the real cache)."""
    tokenizer = packaged_tokenizer()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer)))
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", list(OPTIONS))
def test_parameter_methods_edit_answer_directly_and_restore_the_weights(
        method: str, mquake_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = saved_tiny_llama(tmp_path)
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))  # key statistics of this tiny model
    out = tmp_path / "results"
    options = [part for option in OPTIONS[method] for part in ("--editor-option", option)]
    assert benchmark_main()(["--dataset", str(mquake_dir / "MQuAKE-CF-3k-dev600.json"), "--method", method, "--model",
                             str(folder), "--k", "1", "--cases", "3", "--out", str(out), *options]) == 0
    result = json.loads(next(out.glob(f"mquake_*_{method}_k1_n3_s0.json")).read_text())
    summary = result["summary"]
    assert summary["method"] == method and summary["n_cases"] == 3 and summary["hop_acc"] is None
    for case in result["cases"]:
        assert 1 <= len(case["questions"]) <= 3
        assert all(q["trace"] == [] and q["llm_calls"] == 1 for q in case["questions"])
    rows = json.loads((out / "mquake_summary.json").read_text())
    assert [row["method"] for row in rows] == [method]


def test_an_llm_over_an_edited_model_answers_from_the_edited_weights_then_from_the_restored_ones(
        tmp_path: Path) -> None:
    """Editors bump the model's weights version, so cached prefixes and rows of the old weights are dropped."""
    from editagent.editors import ROME, RomeConfig, WeightEdit
    from editagent.llm import TransformersLLM
    from editagent.models import weights_version

    tokenizer = packaged_tokenizer()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer))).eval()
    llm = TransformersLLM(model, tokenizer, name="edited")
    prefix = "Q: Where is the Eiffel Tower? A: Paris\n"
    prompts = [prefix + "Q: Where is the Colosseum? A:", prefix + "Q: Where is Big Ben? A:"]
    before = llm.generate(prompts, max_new_tokens=6, prefix=prefix)
    editor = ROME(model, tokenizer, RomeConfig(stats_tokens=2000, steps=4, lr=5.0, n_context_templates=0),
                  cache_dir=tmp_path, progress=False)
    version = weights_version(model)
    handle = editor.apply([WeightEdit(prompt="Q: Where is the Colosseum? A:", subject="Colosseum", target="Oslo")])
    assert weights_version(model) > version  # what tells every TransformersLLM over the model to drop its caches
    edited = llm.generate(prompts, max_new_tokens=6, prefix=prefix)
    uncached = TransformersLLM(model, tokenizer, name="uncached", prefix_cache=False)
    assert edited == uncached.generate(prompts, max_new_tokens=6)
    version = weights_version(model)
    handle.undo()
    assert weights_version(model) > version
    assert llm.generate(prompts, max_new_tokens=6, prefix=prefix) == before


def test_the_sequential_benchmark_scores_every_checkpoint_keeps_each_curve_and_honours_a_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    folder = saved_tiny_llama(tmp_path)
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["--model", str(folder), "--sequential", "3", "--methods", "grace", "ft-m", "--sequential-cap", "ft-m=2",
            "--locality-prompts", "2", "--out", str(out), "--work", str(work), "--name", "sequential"]

    assert benchmark_main("editors")(argv) == 0

    result = json.loads((out / "sequential.json").read_text())
    curves = result["sequential"]
    assert list(curves) == ["no-edit", "grace", "ft-m"]
    assert [p["n_edits"] for p in curves["grace"]] == [3] and [p["n_edits"] for p in curves["ft-m"]] == [2]
    assert all(0 <= p[m] <= 1 for p in curves["grace"] for m in ("reliability", "generalization", "locality"))
    assert result["capped"] == {"ft-m": 2}
    page = (out / "sequential.md").read_text()
    assert "ft-m was stopped after 2 edits" in page
    ft_m = curves["ft-m"][-1]  # its only checkpoint: the cap

    def falls(key: str, floor: float) -> str:
        return "never" if ft_m[key] >= floor else f"2 edits ({ft_m[key]:.2f})"

    assert f"| ft-m | 2 | {falls('reliability', 0.9)} | {falls('locality', 0.95)} |" in page
    assert (out / "sequential.png").stat().st_size > 0
    kept = sorted(path.name for path in work.glob("sequential_*.json"))
    assert len(kept) == 2 and all("_n3_loc2" in name for name in kept)

    with caplog.at_level(logging.INFO):
        assert benchmark_main("editors")(argv) == 0  # a rerun takes both curves from --work
    assert caplog.text.count("sequential curve from") == 2
    assert json.loads((out / "sequential.json").read_text())["sequential"] == curves


def test_the_sequential_benchmark_puts_the_weights_back_without_keeping_a_handle_per_edit(tmp_path: Path) -> None:
    """Weight handles are dropped as the edits go (each holds copies of what it touched) and the weights restored
    from one copy at the end; GRACE's handles, beside the weights, are undone."""
    editors = benchmark_module("editors")
    model = sharp_model("llama")
    before = snapshot(model)
    for method in ("kne", "grace"):
        args = editors.parse_args(["--sequential", "3", "--methods", method, "--locality-prompts", "2",
                                   "--work", str(tmp_path / method)])
        result: dict[str, Any] = {}
        editors.run_sequential(args, model, TOKENIZER, result)
        assert [p["n_edits"] for p in result["sequential"][method]] == [3]
        assert_same_weights(model, before)
        assert sum(len(module._forward_hooks) for module in model.modules()) == 0


def test_a_sequential_run_stopped_mid_curve_goes_on_from_its_kept_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    editors = benchmark_module("editors")
    model = sharp_model("llama")
    before = snapshot(model)

    def args(work: str) -> Any:
        return editors.parse_args(["--sequential", "3", "--methods", "kne", "--locality-prompts", "2",
                                   "--save-every", "1", "--work", str(tmp_path / work)])

    whole: dict[str, Any] = {}
    editors.run_sequential(args("whole"), model, TOKENIZER, whole)

    # A stop while the third edit is scored (as a killed process would stop): only the state after 2 is kept.
    # The first scoring of all three probes is the unedited model's.
    score, scored = editors.retention, []

    def stop_at_the_third(scorer: Any, probes: Sequence[Any]) -> dict[str, Any]:
        scored.append(len(probes))
        if scored.count(3) == 2:
            raise KeyboardInterrupt
        return score(scorer, probes)

    monkeypatch.setattr(editors, "retention", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        editors.run_sequential(args("stopped"), model, TOKENIZER, {})
    assert_same_weights(model, before)
    (partial,) = (tmp_path / "stopped").glob("*.partial.pt")
    assert torch.load(partial, weights_only=True)["count"] == 2

    monkeypatch.setattr(editors, "retention", score)
    resumed: dict[str, Any] = {}
    with caplog.at_level(logging.INFO):
        editors.run_sequential(args("stopped"), model, TOKENIZER, resumed)
    assert "resumes after 2 sequential edits" in caplog.text
    timing = ("seconds_per_edit", "stats_seconds", "peak_rss_mb")
    strip = [{k: v for k, v in point.items() if k not in timing} for point in resumed["sequential"]["kne"]]
    assert strip == [{k: v for k, v in point.items() if k not in timing} for point in whole["sequential"]["kne"]]
    assert not partial.exists()
    assert_same_weights(model, before)

    # State begun from other weights is set aside, not loaded into this model.
    state = {name: weight.clone() for name, weight in before.items()}
    editors.save_sequential(partial, 2, dict(model.named_parameters()), state, editors.Timed(lambda e: None), [])
    with torch.no_grad():
        next(iter(model.parameters())).add_(1.0)
    kept = dict(model.named_parameters())
    assert editors.resume_sequential(partial, kept, {n: kept[n].detach().clone() for n in state}, editors.Timed(
        lambda e: None), []) == 0
    assert partial.with_suffix(".stale").exists() and not partial.exists()


def test_the_families_page_measures_undo_on_real_edits_and_keeps_each_row_with_its_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    families = benchmark_module("families")
    folder = saved_tiny_llama(tmp_path)
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))
    measured = families.measure_weight_undo(str(folder), ["grace", "ft-m"], 1)
    assert all(measured[m]["bit_exact"] is True and measured[m]["held_bytes"] > 0 for m in ("grace", "ft-m"))

    results = tmp_path / "results"
    results.mkdir()
    case = load_mquake(data_file(MQUAKE_DEV))[0]
    new_object = case.requested_rewrite[0].object_new
    summary = {"multi_hop_acc": 0.5, "n_cases": 120, "seconds_per_question": 3.0}
    # the agent is right with an answer past the edit; ROME only by saying the edit's new object
    for method, acc, answer in (("agent", 0.5, "Somewhere else"), ("rome", 0.1, new_object)):
        command = f"python benchmarks/mquake.py --method {method}"
        questions = [{"correct": False, "answer": "no"}, {"correct": True, "answer": answer}]
        (results / f"mquake_tiny_{method}_k1_n120_s0.json").write_text(json.dumps(
            {"summary": {**summary, "multi_hop_acc": acc, "command": command},
             "cases": [{"case_id": case.case_id, "questions": questions}]}))
    (results / "editors_summary.json").write_text(json.dumps([
        {"model": "tiny", "method": "rome", "n_edits": 1, "locality": 0.9, "seconds_per_edit": 11.0},
        {"model": "tiny", "method": "rome", "n_edits": 50, "locality": 0.2},
        {"model": "other", "method": "rome", "n_edits": 1, "locality": 0.1}]))
    (results / "locality.json").write_text(json.dumps({"agreement": 1.0}))
    (results / families.UNDO_FILE).write_text(json.dumps({"rome": {"undo_seconds": 0.01, "held_bytes": 2**20,
                                                                     "bit_exact": True},
                                                            "memory": {"add_seconds": 0.02, "delete_seconds": 0.003,
                                                                       "held_bytes": 0, "bit_exact": True,
                                                                       "stored_before": 350}}))
    assert families.main(["--results", str(results), "--model", "tiny"]) == 0

    rows = json.loads((results / "families.json").read_text())["rows"]
    assert [(r["method"], r["family"]) for r in rows] == [("agent", "memory"), ("rome", "weights: locate and edit")]
    agent, rome = rows
    assert (agent["right_beyond_edit_targets"], rome["right_beyond_edit_targets"]) == (1, 0)
    assert (agent["locality"], agent["seconds_per_edit"], agent["undo_seconds"]) == (1.0, 0.02, 0.003)
    assert (rome["locality"], rome["seconds_per_edit"], rome["undo_held_mb"]) == (0.9, 11.0, 1.0)
    page = (results / "families.md").read_text()
    assert "| memory | agent | 0.5 | 1 / 120 | 1.0 |" in page and "holding 350 edits" in page
    assert "`python benchmarks/mquake.py --method rome`" in page
