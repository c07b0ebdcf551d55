"""EditAgent end to end on the real packaged models (SmolLM2 + MiniLM)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _models import real_llm
from _scripted import ScriptedLLM

from editagent import Answer, Edit, EditAgent, EditError
from editagent.decompose import MeLLo, answer_directly
from editagent.decompose.chain import hop_prefix
from editagent.decompose.direct import clean_answer
from editagent.decompose.mello import CHANGE, KEEP
from editagent.models import Embedder
from editagent.policy import WEIGHTS_KEY
from editagent.view import IN_MEMORY_KEY


def _agent(path: Path, embedder: Embedder, namespace: str = "default", method: str = "agent") -> EditAgent:
    return EditAgent(namespace=namespace, store=path / "store", llm=real_llm(), embedder=embedder, method=method)


def test_mello_ask_returns_a_well_formed_trace_on_the_real_model(tmp_path: Path, embedder: Embedder) -> None:
    agent = _agent(tmp_path, embedder, method="mello-guided")
    stored = [agent.edit("The Sandman", "P50", "F. Scott Fitzgerald"),
              agent.edit("F. Scott Fitzgerald", "P26", "Dick Powell"),
              agent.edit("Dick Powell", "P27", "Czech Republic")]
    answer = agent.ask('Which country is the spouse of the author of "The Sandman" a citizen of?')
    assert isinstance(answer, Answer)
    assert answer.namespace == "default"
    assert 1 <= len(answer.trace) <= 4
    assert answer.llm_calls >= 2
    assert answer.raw.startswith("Question: Which country")
    ids = {edit.id for edit in stored}
    for hop in answer.trace:
        assert hop.subquestion
        assert hop.retrieved_edit_id in ids  # every hop retrieved one of this namespace's edits
        assert hop.retrieval_score is not None and -1.0 <= hop.retrieval_score <= 1.0001
        assert hop.retrieved_fact in {edit.sentence for edit in stored}
    assert answer.text or answer.failure  # either an answer or the reason there is none
    # The first subquestion is about the book's author, so retrieval must find the author edit.
    assert answer.trace[0].retrieved_edit_id == stored[0].id


def test_guided_verdict_is_the_better_scored_form_on_the_real_model(tmp_path: Path, embedder: Embedder) -> None:
    agent = _agent(tmp_path, embedder)
    edit = agent.edit("France", "capital", "Lyon")
    reasoner = MeLLo(agent.llm, agent.memory.top1, max_hops=1, guided=True)
    answer = reasoner.answer("What is the capital of France?")
    hop = answer.trace[0]
    assert hop.retrieved_edit_id == edit.id
    # The verdict the loop wrote is the one the model scores higher on the prompt up to the retrieved fact.
    before_verdict = answer.raw[: answer.raw.index(f"Retrieved fact: {edit.sentence}\n")]
    prompt = f"{reasoner.prefix}{before_verdict}Retrieved fact: {edit.sentence}\n"
    keep, change = agent.llm.score_many([(prompt, KEEP), (prompt, CHANGE)], prefix=reasoner.prefix)
    assert hop.contradicted == (change > keep)
    assert (hop.answer, hop.source) == ("Lyon", "edit") if hop.contradicted else hop.source == "model"


@pytest.mark.parametrize("change_score", [1.0, -1.0])
def test_guided_contradiction_takes_the_edited_object_and_agreement_keeps_the_draft(
        tmp_path: Path, embedder: Embedder, change_score: float) -> None:
    # After "contradicts" the loop writes the edit's object itself; after "does not contradict" the model goes on.
    then = "Final answer: Lyon." if change_score > 0 else " Paris\nFinal answer: Paris."
    llm = ScriptedLLM(["Subquestion: What is the capital of France?\nGenerated answer: Paris.\n", then],
                      change_score=change_score)
    agent = EditAgent(store=tmp_path / "store", embedder=embedder, llm=llm)
    edit = agent.edit("France", "capital", "Lyon")
    hop = MeLLo(agent.llm, agent.memory.top1, max_hops=1, guided=True).answer("What is the capital of France?").trace[0]
    assert hop.retrieved_edit_id == edit.id and hop.contradicted == (change_score > 0)
    assert (hop.answer, hop.source) == (("Lyon", "edit") if change_score > 0 else ("Paris", "model"))


@pytest.mark.parametrize("method", ["agent", "mello", "mello-guided", "pokemqa"])
def test_no_method_reads_an_edit_that_lives_only_in_the_weights(tmp_path: Path, embedder: Embedder,
                                                                method: str) -> None:
    """An edit written with to="weights" is answered by the edited model, so no reasoner may retrieve it from the
    store (the agent's chain walk skipped it; MeLLo and PokeMQA retrieved it through ``memory.top1``)."""
    replies = ["Subquestion: What is the capital of France?\nGenerated answer: Paris.\n", "Final answer: Paris."]
    agent = EditAgent(store=tmp_path / "store", embedder=embedder, method=method,
                      llm=ScriptedLLM(replies, change_score=1.0))
    weights_only = agent.memory.add(Edit(subject="France", relation="capital", object="Lyon",
                                         metadata={WEIGHTS_KEY: {"method": "rome"}, IN_MEMORY_KEY: False}))[0]
    other = agent.edit("Germany", "capital", "Hamburg")
    answer = agent.ask("What is the capital of France?")
    retrieved = {hop.retrieved_edit_id for hop in answer.trace} - {None}
    assert weights_only.id not in retrieved and retrieved <= {other.id}
    assert "Lyon" not in answer.text
    assert agent.memory.top1(["What is the capital of France?"], ["default"])[0].id == weights_only.id  # it is there


def test_namespaces_never_see_each_other(tmp_path: Path, embedder: Embedder) -> None:
    alice = _agent(tmp_path, embedder, "alice")
    bob = EditAgent(namespace="bob", memory=alice.memory, llm=real_llm())
    secret = alice.edit("Alice's cat", "P27", "Norway")
    assert [s.id for s in alice.edits()] == [secret.id]
    assert bob.edits() == []
    assert bob.search("Which country is Alice's cat a citizen of?") == []
    assert bob.get(secret.id) is None
    with pytest.raises(EditError, match="namespace 'bob'"):
        bob.forget(secret.id)
    assert alice.get(secret.id) is not None  # bob's failed forget deleted nothing
    assert len(bob.graph().graph.edges) == 0 and len(alice.graph().graph.edges) == 1


def test_forget_supersede_history_and_graph(tmp_path: Path, embedder: Embedder) -> None:
    agent = _agent(tmp_path, embedder)
    first = agent.edit("Doug TenNapel", "country of citizenship", "United Kingdom")
    second = agent.edit("doug tennapel", "citizenship", "Canada")
    assert [s.id for s in agent.edits()] == [second.id]
    assert [(s.id, s.status) for s in agent.history(second.id)] == [(first.id, "superseded"),
                                                                         (second.id, "live")]
    graph = agent.graph()
    assert graph.lookup("Doug TenNapel", "P27")[0].object == "Canada"
    agent.forget(second.id)
    assert agent.edits() == []
    assert agent.get(second.id).status == "deleted"
    with pytest.raises(EditError):
        agent.edit("x", None, "y")


# -- the editagent method (ChainReasoner behind EditAgent.ask) -------------------------------------------------


def test_out_of_scope_question_bypasses_the_memory(tmp_path: Path, embedder: Embedder) -> None:
    agent = _agent(tmp_path, embedder)
    agent.edit("Doug TenNapel", "country of citizenship", "United Kingdom")
    question = "What is the capital of Japan?"
    answer = agent.ask(question)
    assert answer.route == "model" and answer.method == "agent"
    assert [hop.source for hop in answer.trace] == ["model"]
    assert all(hop.retrieved_edit_id is None for hop in answer.trace)
    # Out of scope means exactly the plain model's answer, from the same prompt the no-edit baseline uses.
    assert answer.text == answer_directly(agent.llm, [question])[0][0]


def test_edited_second_hop_is_used_after_the_models_first_hop(tmp_path: Path, embedder: Embedder) -> None:
    agent = _agent(tmp_path, embedder)
    # Whatever the model believes wrote "Harry Potter", that person's citizenship is now edited.
    prefix = hop_prefix("author")
    author = clean_answer(agent.llm.generate([f"{prefix}Q: Who is the author of Harry Potter? A:"],
                                             stop=["\n", "Q:"], max_new_tokens=16, prefix=prefix)[0])
    assert author, "the model should name some author"
    edit = agent.edit(author, "country of citizenship", "Atlantis")
    answer = agent.ask("What is the country of citizenship of the author of Harry Potter?")
    assert answer.route == "memory"
    assert [hop.source for hop in answer.trace] == ["model", "edit"]
    assert answer.trace[0].answer == author
    assert answer.trace[1].retrieved_edit_id == edit.id
    assert answer.text == "Atlantis"


def test_superseding_an_edit_changes_the_next_answer(tmp_path: Path, embedder: Embedder) -> None:
    agent = _agent(tmp_path, embedder)
    agent.edit("France", "capital", "Lyon")
    first = agent.ask("What is the capital of France?")
    assert (first.text, first.route, first.trace[0].source) == ("Lyon", "memory", "edit")
    newer = agent.edit("France", "capital city", "Marseille")
    second = agent.ask("What is the capital of France?")
    assert second.text == "Marseille" and second.trace[0].retrieved_edit_id == newer.id
    agent.forget(newer.id)  # no live edit left: back to the plain model
    assert agent.ask("What is the capital of France?").route == "model"


def test_consecutive_edited_hops_follow_the_graph(tmp_path: Path, embedder: Embedder) -> None:
    agent = _agent(tmp_path, embedder)
    agent.edit("Marge Simpson", "creator", "Doug TenNapel")
    agent.edit("Doug TenNapel", "country of citizenship", "United Kingdom")
    answer = agent.ask("Which country is the creator of Marge Simpson a citizen of?")
    assert [hop.source for hop in answer.trace] == ["edit", "graph"]
    assert answer.text == "United Kingdom" and answer.llm_calls == 0


def test_unknown_method_is_rejected(tmp_path: Path, embedder: Embedder) -> None:
    with pytest.raises(EditError, match="method"):
        EditAgent(store=tmp_path / "s", embedder=embedder, method="magic")  # type: ignore[arg-type]


def test_edits_only_answer_never_loads_the_model_and_supersession_keeps_the_old_value(
        tmp_path: Path, embedder: Embedder) -> None:
    agent = EditAgent(store=tmp_path / "store", embedder=embedder)  # default model, loaded lazily
    agent.edit("Marge Simpson", "creator", "Doug TenNapel")
    agent.edit("Doug TenNapel", "country of citizenship", "United States of America")
    newer = agent.edit("Doug TenNapel", "citizenship", "United Kingdom")
    assert newer.previous_object == "United States of America"  # what ripple() needs to see what it undoes
    answer = agent.ask("Which country is the creator of Marge Simpson a citizen of?")
    assert answer.text == "United Kingdom" and answer.llm_calls == 0
    assert agent._llm is None  # no hop needed the model, so it was never loaded


def test_loading_the_models_draws_no_progress_bars_unless_asked(tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    with EditAgent(store=tmp_path / "quiet") as agent:  # loads the embedder, then the language model
        assert agent.llm.name
    assert "Loading weights" not in capfd.readouterr().err
    with EditAgent(store=tmp_path / "shown", progress=True) as agent:
        assert agent.llm.name
    assert "Loading weights" in capfd.readouterr().err  # the opt-in shows them
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # the setting it found is back
