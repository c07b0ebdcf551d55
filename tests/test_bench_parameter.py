"""The MQuAKE benchmark's parameter-editor methods, end to end on a tiny saved model.

A tiny random Llama cannot answer MQuAKE, so this checks the plumbing only: every case is
edited, answered directly (no decomposition) and recorded. Undo is tested in test_editors.py;
the real model's numbers come from ``benchmarks/mquake.py --method rome``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
import transformers
from _models import packaged_tokenizer, tiny_config


def benchmark_main() -> Callable[[Sequence[str]], int]:
    """``main`` of ``benchmarks/mquake.py`` (benchmarks/ holds scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mquake.py"
    spec = importlib.util.spec_from_file_location("benchmarks_mquake", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_parameter_methods_edit_answer_directly_and_restore_the_weights(
        method: str, mquake_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = packaged_tokenizer()  # before the cache moves: the packaged model is converted in the real one
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))  # key statistics of this tiny model
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer)))
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "results"
    assert benchmark_main()(["--dataset", str(mquake_dir / "MQuAKE-CF-3k-dev600.json"), "--method", method, "--model",
                 str(folder), "--k", "1", "--cases", "3", "--out", str(out),
                 "--editor-option", "stats_tokens=2000", "--editor-option", "steps=4"]) == 0
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
