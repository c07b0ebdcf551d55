"""The MQuAKE runner's bookkeeping: selection, grouping, metrics, failure categories, resume.

The asker here is scripted (it answers from the gold data or says a fixed wrong thing) so
that the metric code is checked exactly; the real model is exercised by the benchmark itself
and by test_agent.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from editagent.eval import MQuAKECase, load_mquake
from editagent.eval.runner import (
    RunConfig,
    edit_groups,
    failure_category,
    hop_correct,
    run,
    select_cases,
)
from editagent.schema import Answer, Hop


@pytest.fixture(scope="module")
def cases(mquake_dir: Path) -> list:
    return load_mquake(mquake_dir / "MQuAKE-CF-3k-dev600.json")


def gold_answer(case: MQuAKECase, question: str, *, hops: int | None = None) -> Answer:
    trace = [Hop(subquestion=h.question, answer=h.answer, source="model") for h in case.new_single_hops]
    return Answer(question=question, text=case.new_answer, trace=trace[:hops] if hops else trace, method="mello")


def test_select_cases_is_balanced_and_seeded(cases: list) -> None:
    chosen = select_cases(cases, 30, seed=1)
    assert len(chosen) == 30 and len({c.case_id for c in chosen}) == 30
    assert Counter(c.n_hops for c in chosen) == {2: 10, 3: 10, 4: 10}
    assert [c.case_id for c in select_cases(cases, 30, seed=1)] == [c.case_id for c in chosen]
    assert [c.case_id for c in select_cases(cases, 30, seed=2)] != [c.case_id for c in chosen]


def test_edit_groups_share_memory_as_the_paper_does(cases: list) -> None:
    chosen = select_cases(cases, 10, seed=0)
    groups = edit_groups(chosen, cases, 3)
    assert [len(evaluated) for _, evaluated in groups] == [3, 3, 3, 1]
    assert all(memory == evaluated for memory, evaluated in groups)
    [(memory, evaluated)] = edit_groups(chosen, cases, "all")
    assert len(memory) == 600 and evaluated == chosen


def test_hop_correct_needs_every_hop_and_the_final_answer(cases: list) -> None:
    case = next(c for c in cases if c.n_hops == 3)
    assert hop_correct(case, gold_answer(case, case.questions[0]))
    assert not hop_correct(case, gold_answer(case, case.questions[0], hops=2))  # wrong number of hops
    wrong_middle = gold_answer(case, case.questions[0])
    wrong_middle.trace[1].answer = "Atlantis"
    assert not hop_correct(case, wrong_middle)
    assert failure_category(case, wrong_middle) == "correct"  # the final answer alone is still right


def test_failure_categories_read_the_trace(cases: list) -> None:
    case = next(c for c in cases if c.n_hops == 2 and c.n_edits == 1
                and tuple(c.orig.new_triples[0]) in {tuple(t) for t in c.orig.edit_triples})
    broken = Answer(question="q", text="", failure="format: no subquestion and draft answer")
    assert failure_category(case, broken) == "format break"
    short = gold_answer(case, "q", hops=1)
    short.text = "Atlantis"
    assert failure_category(case, short) == "wrong decomposition"
    missed = gold_answer(case, "q")
    missed.text, missed.trace[0].answer = "Atlantis", "Atlantis"
    assert failure_category(case, missed) == "retrieval miss"  # hop 1 was edited, the model answered it


def test_run_resumes_from_its_checkpoint_and_stops_at_the_first_right_phrasing(tmp_path: Path,
                                                                                mquake_dir: Path) -> None:
    data = str(mquake_dir / "MQuAKE-CF-3k-dev600.json")
    by_question = {q: c for c in load_mquake(data) for q in c.questions}
    asked: list[str] = []

    def ask(questions: Sequence[str], namespaces: Sequence[str]) -> list[Answer]:
        asked.extend(questions)
        # Right on the second phrasing only, so each case is asked exactly twice.
        return [gold_answer(by_question[q], q) if by_question[q].questions[1] == q
                else Answer(question=q, text="Atlantis") for q in questions]

    added: list[str] = []
    config = RunConfig(dataset=data, method="mello", k=1, n_cases=6, out=tmp_path, chunk=4)
    result = run(config, ask, lambda cases, ns: added.append(ns))
    summary = result["summary"]
    assert summary["multi_hop_acc"] == 1.0 and summary["first_phrasing_acc"] == 0.0
    assert summary["hop_acc"] == 1.0 and summary["n_questions_asked"] == 12 and len(asked) == 12
    assert len(added) == 6  # k=1: one namespace per case
    rows = json.loads((tmp_path / "mquake_summary.json").read_text())
    assert [(r["method"], r["k"], r["n_cases"]) for r in rows] == [("mello", 1, 6)]
    assert (tmp_path / f"{config.run_id}.md").read_text().startswith("# MQuAKE")
    assert (tmp_path / f"{config.run_id}.png").read_bytes()[:4] == b"\x89PNG"

    asked.clear()
    again = run(config, ask, lambda cases, ns: None)  # everything is in the checkpoint: nothing is asked
    assert asked == [] and again["summary"]["multi_hop_acc"] == 1.0
    assert len(json.loads((tmp_path / "mquake_summary.json").read_text())) == 1  # the row was replaced
