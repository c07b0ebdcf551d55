"""Every rule of the agent's walk (``hop_rules.HOP_RULES``): each row's worked example, run and checked.

The real embedder judges relations by meaning; the model is a script that must not be asked (an example the
store answers never reaches it), so a rule that stops taking its hop fails here by name.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from _scripted import ScriptedLLM

from editagent.decompose.chain import ChainReasoner
from editagent.decompose.hop_rules import HOP_RULES, HopRule
from editagent.memory import EditMemory
from editagent.schema import Edit


def _read(example: str) -> tuple[list[Edit], str, str, list[tuple[str, str]]]:
    """(edits, question, answer, hops) from an example: edit lines, "question -> answer", "relation (tier), ..."."""
    lines = [line.strip() for line in example.strip().splitlines()]
    edits = [Edit(subject=s, relation=r, object=o) for s, r, o in (line.split(" | ") for line in lines[:-2])]
    question, answer = lines[-2].split(" -> ")
    hops = [(hop.rsplit(" (", 1)[0], hop.rsplit(" (", 1)[1].rstrip(")")) for hop in lines[-1].split(", ")]
    return edits, question, answer, hops


class _Recording(ChainReasoner):
    """The reasoner, noting the name of every rule whose step took the walk on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fired: list[str] = []
        for rule in HOP_RULES:
            setattr(self, rule.step, self._noting(getattr(self, rule.step)))

    def _noting(self, step: Any) -> Any:
        @functools.wraps(step)
        def noted(rule: HopRule, *args: Any) -> bool:
            took = step(rule, *args)
            if took:
                self.fired.append(rule.name)
            return took

        return noted


def test_the_table_is_well_formed() -> None:
    assert len({rule.name for rule in HOP_RULES}) == len(HOP_RULES)
    for rule in HOP_RULES:
        assert callable(getattr(ChainReasoner, rule.step, None)), rule.name
        edits, question, answer, hops = _read(rule.example)
        assert edits and question.endswith("?") and answer and hops, rule.name


@pytest.mark.parametrize("rule", HOP_RULES, ids=[rule.name for rule in HOP_RULES])
def test_each_rule_takes_its_example(rule: HopRule, tmp_path: Path, embedder: Any) -> None:
    edits, question, answer, hops = _read(rule.example)
    llm = ScriptedLLM()
    with EditMemory(tmp_path / "store", embedder=embedder) as memory:
        memory.add(edits)
        reasoner = _Recording(llm, memory)
        got = reasoner.answer(question)
    assert rule.name in reasoner.fired, (rule.name, reasoner.fired, got.trace)
    assert [(hop.relation, hop.tier) for hop in got.trace] == hops
    assert got.text == answer and got.route == "memory"
    assert llm.prompts == []
