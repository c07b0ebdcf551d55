"""PokeMQA: the loop's bookkeeping on a scripted stand-in, then a real run on SmolLM2 + MiniLM."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from _models import real_llm
from _scripted import ScriptedLLM

from editagent.decompose import (
    DEFAULT_SCOPE_THRESHOLD,
    PokeMQA,
    entity_lookup_from_kgprompt,
    pokemqa_prompt,
    threshold_scope,
)
from editagent.decompose.pokemqa import ENTITY, GENERATED, STOP
from editagent.eval import load_mquake
from editagent.llm import LLM
from editagent.memory import EditMemory
from editagent.models import Embedder
from editagent.schema import Edit, SearchHit

ENTITY_LINE = "According to Generated answer, the entity of Subquestion is:"


def _hit(subject: str, relation: str, obj: str, score: float = 0.9) -> SearchHit:
    edit = Edit(subject=subject, relation=relation, object=obj)
    return SearchHit(id=edit.id, memory=edit.sentence, score=score, edit=edit)


HEAD = _hit("Atlantis", "head of state", "Alice Smith")  # "The name of the current head of state in Atlantis is ..."
Q = "Who is the spouse of the head of state of Atlantis?"
SUB1 = "Who is the head of state of Atlantis?"
SUB2 = "Who is the spouse of Alice Smith?"


def _scope(table: dict[str, SearchHit]):
    seen: list[list[str]] = []

    def scope(subquestions: Sequence[str], namespaces: Sequence[str]) -> list[SearchHit | None]:
        seen.append(list(zip(subquestions, namespaces, strict=True)))
        return [table.get(subquestion) for subquestion in subquestions]

    scope.seen = seen  # type: ignore[attr-defined]
    return scope


def test_scripted_stand_in_speaks_the_llm_protocol() -> None:
    assert isinstance(ScriptedLLM({}), LLM)


def test_in_scope_hop_uses_the_edit_and_out_of_scope_hop_the_model() -> None:
    llm = ScriptedLLM({Q: [
        f"Subquestion: {SUB1}\n",
        f"Subquestion: {SUB2}\n",
        f" The spouse of Alice Smith is Bob Stone.\n{ENTITY_LINE} Bob Stone\nFinal answer: Bob Stone.\n",
    ]})
    scope = _scope({SUB1: HEAD})
    answer = PokeMQA(llm, scope).answer(f"  {Q} ")

    assert answer.text == "Bob Stone" and answer.failure is None and answer.method == "pokemqa"
    assert scope.seen == [[(SUB1, "default")], [(SUB2, "default")]]
    first, second = answer.trace
    assert first.subquestion == SUB1 and first.source == "edit" and first.contradicted
    assert first.retrieved_edit_id == HEAD.id and first.retrieval_score == 0.9
    assert first.retrieved_fact == HEAD.memory == first.draft_answer
    assert first.answer == "Alice Smith"  # guided: the edit's object, written by the loop
    assert second.subquestion == SUB2 and second.source == "model" and not second.contradicted
    assert second.retrieved_edit_id is None and second.retrieved_fact is None
    assert second.draft_answer == "The spouse of Alice Smith is Bob Stone." and second.answer == "Bob Stone"
    # one generation per round: the model never wrote the edit, and continued after "Generated answer:"
    assert answer.llm_calls == 3 == len(llm.calls)
    assert all(call["stop"] == STOP for call in llm.calls)
    prompts = [call["prompts"][0] for call in llm.calls]
    assert prompts[0] == f"{pokemqa_prompt().rstrip()}\n\nQuestion: {Q}\n"
    assert prompts[1].endswith(f"Generated answer: {HEAD.memory}\n{ENTITY_LINE} Alice Smith\n")
    assert prompts[2].endswith(f"Subquestion: {SUB2}\n{GENERATED}")
    assert answer.raw.startswith(f"Question: {Q}\nSubquestion: {SUB1}\n")
    assert answer.raw.endswith("Final answer: Bob Stone.\n")


def test_unguided_model_writes_the_entity_of_an_in_scope_edit() -> None:
    llm = ScriptedLLM({Q: [
        f"Subquestion: {SUB1}\n",
        f"{ENTITY_LINE} Alice Smith\nFinal answer: Alice Smith\n",
    ]})
    answer = PokeMQA(llm, _scope({SUB1: HEAD}), guided=False).answer(Q)
    assert llm.calls[1]["prompts"][0].endswith(f"Subquestion: {SUB1}\nGenerated answer: {HEAD.memory}\n")
    hop = answer.trace[0]
    assert hop.answer == "Alice Smith" and hop.source == "edit" and hop.retrieved_edit_id == HEAD.id
    assert answer.text == "Alice Smith" and answer.llm_calls == 2


def test_edit_sentence_gets_a_full_stop_and_stays_on_one_line() -> None:
    edit = Edit(subject="Atlantis", relation="motto", object="Onward", sentence="Atlantis   has the motto Onward")
    hit = SearchHit(id=edit.id, memory=edit.sentence, score=0.8, edit=edit)
    llm = ScriptedLLM({Q: [f"Subquestion: {SUB1}\n", "Final answer: Onward\n"]})
    answer = PokeMQA(llm, _scope({SUB1: hit})).answer(Q)
    assert answer.trace[0].draft_answer == "Atlantis has the motto Onward."
    assert "Generated answer: Atlantis has the motto Onward.\n" in llm.calls[1]["prompts"][0]


def test_guided_writes_a_missing_entity_line_and_the_model_completes_it() -> None:
    llm = ScriptedLLM({Q: [
        f"Subquestion: {SUB1}\n",
        " Atlantis is ruled by Carol King.\nSubquestion: skipped, as the entity line is missing\n",
        " Carol King",  # the entity, stopped at the line end
        f"Subquestion: {SUB2}\n",
        f" Dan Brown.\n{ENTITY_LINE} Dan Brown\nFinal answer: Dan Brown\n",
    ]})
    answer = PokeMQA(llm, _scope({})).answer(Q)
    assert [hop.subquestion for hop in answer.trace] == [SUB1, SUB2]
    assert answer.trace[0].draft_answer == "Atlantis is ruled by Carol King." and answer.trace[0].answer == "Carol King"
    assert llm.calls[2]["stop"] == ("\n",)
    assert llm.calls[2]["prompts"][0].endswith(f"{GENERATED} Atlantis is ruled by Carol King.\n{ENTITY}")
    assert llm.calls[3]["prompts"][0].endswith(f"{ENTITY} Carol King\n")
    assert "skipped" not in answer.raw
    assert answer.text == "Dan Brown" and answer.llm_calls == 5


def test_unguided_accepts_a_missing_entity_line_as_the_paper_does() -> None:
    llm = ScriptedLLM({Q: [
        f"Subquestion: {SUB1}\n",
        f" Atlantis is ruled by Carol King.\nSubquestion: {SUB2}\n",
        f" Dan Brown.\n{ENTITY_LINE} Dan Brown\nFinal answer: Dan Brown\n",
    ]})
    answer = PokeMQA(llm, _scope({}), guided=False).answer(Q)
    assert [hop.answer for hop in answer.trace] == ["", "Dan Brown"]
    assert answer.text == "Dan Brown" and answer.llm_calls == 3


def test_questions_advance_together_one_generate_per_round() -> None:
    other = "Which continent is Atlantis on?"
    llm = ScriptedLLM({
        Q: [f"Subquestion: {SUB1}\n", "Final answer: Alice Smith\n"],
        other: [f"Subquestion: {other}\n", f" Atlantis is in Europe.\n{ENTITY_LINE} Europe\nFinal answer: Europe\n"],
    })
    scope = _scope({SUB1: HEAD})
    answers = PokeMQA(llm, scope).answer_many([Q, other], ["alice", "bob"])
    assert [len(call["prompts"]) for call in llm.calls] == [2, 2]
    # one scope call per round, for all new subquestions, each in its question's namespace
    assert scope.seen == [[(SUB1, "alice"), (other, "bob")]]
    assert [a.namespace for a in answers] == ["alice", "bob"]
    assert [a.text for a in answers] == ["Alice Smith", "Europe"]
    assert [a.trace[0].source for a in answers] == ["edit", "model"]


def test_max_hops_ends_a_question_that_keeps_asking() -> None:
    replies = [f"Subquestion: {SUB1}\n"] + [f" X{i}.\n{ENTITY_LINE} X{i}\nSubquestion: Q{i}?\n" for i in range(5)]
    llm = ScriptedLLM({Q: replies})
    answer = PokeMQA(llm, _scope({}), max_hops=2).answer(Q)
    assert answer.failure == "too many hops"
    assert len(answer.trace) == 2  # the third subquestion is not a hop
    assert answer.text == "X1"  # without a final answer: the last hop's entity
    assert answer.llm_calls == 3


def test_final_answer_may_come_after_the_last_allowed_hop() -> None:
    llm = ScriptedLLM({Q: [f"Subquestion: {SUB1}\n", f" X.\n{ENTITY_LINE} X\nFinal answer: X\n"]})
    answer = PokeMQA(llm, _scope({}), max_hops=1).answer(Q)
    assert answer.text == "X" and answer.failure is None and len(answer.trace) == 1


@pytest.mark.parametrize(("reply", "failure"), [
    ("I do not know.\n", "format: no subquestion or final answer"),
    ("Subquestion:\n", "format: empty subquestion"),
    ("Subquestion: Who is the head of the head of the head of", "format: subquestion line not ended"),
])
def test_format_breaks_are_recorded(reply: str, failure: str) -> None:
    answer = PokeMQA(ScriptedLLM({Q: [reply]}), _scope({})).answer(Q)
    assert answer.failure == failure and answer.text == "" and answer.trace == [] and answer.llm_calls == 1


def test_entity_of_question_picks_the_knowledge_prompt(tmp_path: Path) -> None:
    other = "Which continent is Atlantis on?"
    kgprompt = tmp_path / "kgprompt.json"
    kgprompt.write_text(json.dumps([
        {"existing": {Q + " ": True, other: False}, "mapping": {Q + " ": "Atlantis, a  country."}},
    ]), encoding="utf-8")
    lookup = entity_lookup_from_kgprompt(kgprompt)
    assert lookup(Q) == "Atlantis, a  country." and lookup(other) is None
    llm = ScriptedLLM({Q: ["Final answer: Alice Smith\n"], other: ["Final answer: Europe\n"]})
    answers = PokeMQA(llm, _scope({}), entity_of_question=lookup).answer_many([Q, other])
    kg, plain = pokemqa_prompt(kg=True).rstrip() + "\n\n", pokemqa_prompt().rstrip() + "\n\n"
    assert [(call["prefix"], len(call["prompts"])) for call in llm.calls] == [(kg, 1), (plain, 1)]
    assert llm.calls[0]["prompts"][0] == f"{kg}Question: {Q}\nEntity of Question: Atlantis, a country.\n"
    assert answers[0].raw.startswith(f"Question: {Q}\nEntity of Question: Atlantis, a country.\n")
    assert [a.text for a in answers] == ["Alice Smith", "Europe"] and [a.llm_calls for a in answers] == [1, 1]


def test_threshold_scope_keeps_only_confident_hits() -> None:
    low, high = _hit("A", "capital", "B", score=0.59), _hit("C", "capital", "D", score=0.6)
    asked: list[tuple[list[str], list[str]]] = []

    def top1(subquestions: Sequence[str], namespaces: Sequence[str]) -> list[SearchHit | None]:
        asked.append((list(subquestions), list(namespaces)))
        return [low, high, None]

    scope = threshold_scope(top1, threshold=0.6)
    assert scope(["a", "b", "c"], ["x", "y", "z"]) == [None, high, None]
    assert asked == [(["a", "b", "c"], ["x", "y", "z"])]
    assert 0.0 < DEFAULT_SCOPE_THRESHOLD < 1.0


def test_prompts_are_the_papers_files_unchanged() -> None:
    digests = {True: "a3217fa2addd695a1f1c2e15d8f00b2674adf29ef51292adff50f0f86d65250c",
               False: "cbafce528fdb8dd7a839d3a25a792d63291ffbbcf7a85a41e34bd0dacfd64dd0"}
    for kg, digest in digests.items():
        assert hashlib.sha256(pokemqa_prompt(kg=kg).encode()).hexdigest() == digest


def test_entity_lookup_reads_the_papers_kgprompt_file(mquake_dir: Path) -> None:
    path = mquake_dir / "pokemqa" / "MQuAKE-CF-3k-kgprompt.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    lookup = entity_lookup_from_kgprompt(path)
    assert lookup("Who is the head of state of the country where Ellie Kemper holds a citizenship?") == \
        "Ellie Kemper, a human."
    assert lookup("What is the nationality of the author of \"The Sandman\"?") is None  # existing: false


@pytest.mark.slow
def test_real_model_gives_a_well_formed_trace(store_path: Path, embedder: Embedder, mquake_dir: Path) -> None:
    case = next(c for c in load_mquake(mquake_dir / "MQuAKE-CF-3k-dev600.json") if c.case_id == 35)
    with EditMemory(store_path, embedder=embedder) as memory:
        stored = memory.add(case.edits())  # The Sandman's author is F. Scott Fitzgerald; he is a citizen of Italy

        answers = PokeMQA(real_llm(), threshold_scope(memory.top1, 0.6)).answer_many(case.questions[:2])
    ids = {edit.id for edit in stored}
    objects = {edit.id: edit.object for edit in stored}
    for question, answer in zip(case.questions[:2], answers, strict=True):
        assert answer.question == question and answer.method == "pokemqa"
        assert 1 <= len(answer.trace) <= 5 and 0 < answer.llm_calls <= 2 * 6
        assert answer.raw.startswith(f"Question: {question}\nSubquestion: ")
        for hop in answer.trace:
            assert hop.subquestion and hop.draft_answer
            assert hop.source in ("edit", "model")
            if hop.source == "edit":
                assert hop.retrieved_edit_id in ids and hop.retrieval_score >= 0.6
                assert hop.draft_answer == hop.retrieved_fact and hop.contradicted
                assert hop.answer == objects[hop.retrieved_edit_id]
            else:
                assert hop.retrieved_edit_id is None
        assert answer.text or answer.failure
        # The first subquestion asks for the book's author: the author edit is in scope.
        assert answer.trace[0].retrieved_edit_id == stored[0].id
