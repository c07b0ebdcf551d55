"""MQuAKE runs sharded over Ray workers give the single process's answers, case by case (tiny saved model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers
from _models import packaged_tokenizer, tiny_config
from test_bench_parameter import benchmark_main

from editagent.eval.runner import RunConfig, merge_shards, run
from editagent.schema import Answer


def _answers(out: Path) -> dict[tuple[int, str], str]:
    result = json.loads(next(out.glob("mquake_*_agent_k1_n6_s0.json")).read_text())
    return {(case["case_id"], q["question"]): q["answer"] for case in result["cases"] for q in case["questions"]}


def test_shards_merge_into_the_runs_checkpoint_once(tmp_path: Path) -> None:
    config = RunConfig(dataset="unused", method="agent", n_cases=4, out=tmp_path)
    for index, ids in enumerate(([1, 3], [2, 3])):  # case 3 appears in both: kept once
        shard = RunConfig(dataset="unused", method="agent", n_cases=4, out=tmp_path, shard=(index, 2)).checkpoint
        shard.write_text("".join(json.dumps({"case_id": i, "questions": []}) + "\n" for i in ids))
    assert merge_shards(config, 2) == 3
    assert [json.loads(line)["case_id"] for line in config.checkpoint.read_text().splitlines()] == [1, 3, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.checkpoint.name]


def test_a_shard_skips_the_cases_its_run_already_did_in_one_process(mquake_dir: Path, tmp_path: Path) -> None:
    dataset = str(mquake_dir / "MQuAKE-CF-3k-dev600.json")
    config = RunConfig(dataset=dataset, method="agent", k=1, n_cases=6, out=tmp_path)
    shard = replace(config, shard=(0, 2))
    asked: list[str] = []

    # the runner's scheduling is under test here, not a model
    def ask(questions: Sequence[str], namespaces: Sequence[str]) -> list[Answer]:
        asked.extend(questions)
        return [Answer(question=q, text="") for q in questions]

    rows = run(shard, ask, lambda cases, namespace: None)["cases"]
    assert len(rows) == 3
    # as if one process had done the share's first two cases before the run was resumed on two workers
    config.checkpoint.write_text("".join(json.dumps(row) + "\n" for row in rows[:2]))
    shard.checkpoint.unlink()
    asked.clear()
    again = run(shard, ask, lambda cases, namespace: None)["cases"]
    assert set(asked) == {q["question"] for q in rows[2]["questions"]}
    assert [row["case_id"] for row in again] == [row["case_id"] for row in rows]
    assert merge_shards(config, 2) == 1  # only the case the shard answered is appended


@pytest.mark.slow
def test_two_ray_workers_give_the_single_process_answers(mquake_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'editagent[ray]')")
    tokenizer = packaged_tokenizer()
    torch.manual_seed(0)
    folder = tmp_path / "tiny-llama"
    transformers.AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    main = benchmark_main()
    common = ["--dataset", str(mquake_dir / "MQuAKE-CF-3k-dev600.json"), "--method", "agent", "--model", str(folder),
              "--k", "1", "--cases", "6"]
    assert main([*common, "--out", str(tmp_path / "one" / "results")]) == 0
    assert main([*common, "--out", str(tmp_path / "two" / "results"), "--workers", "2"]) == 0
    one, two = _answers(tmp_path / "one" / "results"), _answers(tmp_path / "two" / "results")
    assert one == two and len(one) >= 6
    summary = json.loads((tmp_path / "two" / "results" / "mquake_summary.json").read_text())[0]
    assert summary["workers"] == 2 and summary["n_cases"] == 6
    assert not list((tmp_path / "two" / "results").glob("*shard*"))  # merged, then removed
