"""The edit policy: memory by default, weights or both on request, recorded in the store and reversible.

A tiny random llama stands in for the model here (ROME on the real model takes seconds per edit and its
statistics minutes, covered by benchmarks/editors.py); the store and embedder are real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_editors import STATS_TOKENS, TOKENIZER, assert_same_weights, rome_for, sharp_model, snapshot

from editagent import EditAgent, EditError
from editagent.editors import GRACE, MEMIT, AnyEditConfig, EditorConfig, GraceConfig, KneConfig, MemitConfig, RomeConfig
from editagent.llm import TransformersLLM
from editagent.models import Embedder
from editagent.policy import EditPolicy, weight_prompt
from editagent.schema import Edit
from editagent.view import RecallableEdits


@pytest.fixture
def agent(tmp_path: Path, embedder: Embedder) -> EditAgent:
    model = sharp_model("llama")
    llm = TransformersLLM(model, TOKENIZER, name="tiny-llama-sharp")
    return EditAgent(store=tmp_path / "store", llm=llm, embedder=embedder,
                     weight_editor=rome_for(model, tmp_path / "stats"))


def test_default_is_memory_and_weights_stay_untouched(agent: EditAgent) -> None:
    before = snapshot(agent.llm.model)
    stored = agent.edit("Paris", "country", "Japan")
    assert agent.weight_edits() == [] and "weights" not in stored.metadata
    assert_same_weights(agent.llm.model, before)


def test_weights_edit_is_recorded_hidden_from_memory_and_undone_by_forget(agent: EditAgent) -> None:
    model = agent.llm.model
    before = snapshot(model)
    stored = agent.edit("Paris", "country", "Japan", to="weights")
    record = stored.metadata["weights"]
    assert record["method"] == "rome" and (agent.memory.path / record["file"]).is_file()
    assert stored.metadata["in_memory"] is False
    assert agent.weight_edits() == [stored.id]
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # The store knows it, but reasoning over memory does not use it: the (edited) model answers that hop.
    assert agent.get(stored.id) is not None
    assert RecallableEdits(agent.memory).lookup("Paris", "country", namespace=agent.namespace) is None
    agent.forget(stored.id)
    assert agent.weight_edits() == []
    assert_same_weights(model, before)


def test_both_is_in_memory_and_weights_and_superseding_takes_the_old_one_out(agent: EditAgent) -> None:
    model = agent.llm.model
    before = snapshot(model)
    first = agent.edit("Paris", "country", "Japan", to="both")
    assert RecallableEdits(agent.memory).lookup("Paris", "country", namespace=agent.namespace).id == first.id
    second = agent.edit("Berlin", "country", "Peru", to="weights")
    after_both = snapshot(model)
    third = agent.edit("Paris", "country", "Chile")  # memory only, supersedes the first
    assert agent.weight_edits() == [second.id]
    assert RecallableEdits(agent.memory).lookup("Paris", "country", namespace=agent.namespace).id == third.id
    assert any(not torch.equal(v, after_both[k]) for k, v in model.state_dict().items())
    agent.forget(second.id)
    assert_same_weights(model, before)  # both weight edits out again, last-in-first-out


def test_restore_weights_reapplies_saved_deltas_to_a_fresh_model(agent: EditAgent, tmp_path: Path,
                                                                 embedder: Embedder) -> None:
    stored = agent.edit("Paris", "country", "Japan", to="weights")
    edited = snapshot(agent.llm.model)
    fresh = sharp_model("llama")
    again = EditAgent(memory=agent.memory, llm=TransformersLLM(fresh, TOKENIZER, name="fresh"),
                      weight_editor=rome_for(fresh, tmp_path / "stats"))
    assert again.restore_weights() == [stored.id]
    assert_same_weights(fresh, edited)
    assert again.restore_weights() == []  # already held


def test_bad_targets_and_sentences_are_clear_errors(agent: EditAgent) -> None:
    with pytest.raises(EditError, match="to:"):
        agent.edit("Paris", "country", "Japan", to="disk")  # type: ignore[arg-type]
    with pytest.raises(EditError, match="sentence"):
        weight_prompt(Edit(subject="Paris", relation="country", object="Japan", sentence="Japan has Paris now."))
    with pytest.raises(EditError, match="sentence"):
        agent.edit("Paris", "country", "Japan", to="weights", sentence="Japan has Paris now.")
    assert agent.edits() == [] and agent.weight_edits() == []  # nothing half-written
    with pytest.raises(ValueError, match="default"):
        EditPolicy(default="cloud")  # type: ignore[arg-type]


def test_the_policys_editor_config_picks_the_editor_the_agent_builds(tmp_path: Path, embedder: Embedder,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITAGENT_CACHE", str(tmp_path / "cache"))  # the tiny model's sampled key statistics
    model = sharp_model("llama")
    before = snapshot(model)
    config = MemitConfig(layers=[0, 1], stats_tokens=STATS_TOKENS, n_context_templates=0, steps=10)
    agent = EditAgent(store=tmp_path / "store", llm=TransformersLLM(model, TOKENIZER, name="tiny-llama-sharp"),
                      embedder=embedder, policy=EditPolicy(editor=config))
    stored = agent.edit("Paris", "country", "Japan", to="weights")
    assert isinstance(agent._editor(), MEMIT) and agent._editor().config is config
    assert stored.metadata["weights"]["method"] == "memit"
    agent.forget(stored.id)
    assert_same_weights(model, before)
    assert isinstance(EditPolicy().editor, RomeConfig)
    assert EditPolicy(editor={"method": "memit", "refits": 0}).editor == MemitConfig(refits=0)
    with pytest.raises(ValueError, match="lyers: not a setting of rome"):
        EditPolicy(editor={"lyers": 3})
    with pytest.raises(ValueError, match="editor: AnyEdit writes long texts"):
        EditPolicy(editor=AnyEditConfig())
    with pytest.raises(ValueError, match="editor: EditorConfig belongs to no registered editor"):
        EditPolicy(editor=EditorConfig())
    with pytest.raises(ValueError, match="editor"):
        EditPolicy(editor=3)  # type: ignore[arg-type]
    for policy in (EditPolicy(editor={"method": "grace", "epsilon": 0.2}), EditPolicy(editor=KneConfig(lr=1e-3)),
                   EditPolicy(editor={"method": "ft-l"})):  # every short-object editor, and the dump names it
        assert EditPolicy.model_validate(policy.model_dump()) == policy
        assert EditPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_a_grace_policy_edits_beside_the_weights_and_forget_gives_back_the_unedited_outputs(
        tmp_path: Path, embedder: Embedder) -> None:
    """GRACE through the agent: the weights never change, the edit's prompt says the new object, a fresh agent's
    ``restore_weights`` brings the codebook back from the saved edit, and ``forget`` leaves every output as before."""
    model = sharp_model("llama")
    llm = TransformersLLM(model, TOKENIZER, name="tiny-llama-sharp")
    agent = EditAgent(store=tmp_path / "store", llm=llm, embedder=embedder,
                      policy=EditPolicy(editor={"method": "grace"}))
    edit = Edit(subject="Paris", relation="country", object="Japan")
    prompt = weight_prompt(edit)
    with torch.no_grad():
        outputs = model(**TOKENIZER([prompt, "The weather today is"], return_tensors="pt", padding=True)).logits
    weights = snapshot(model)
    wanted = TOKENIZER(" Japan", add_special_tokens=False)["input_ids"][0]

    stored = agent.edit("Paris", "country", "Japan", to="weights")

    assert isinstance(agent._editor(), GRACE) and stored.metadata["weights"]["method"] == "grace"
    assert_same_weights(model, weights)
    with torch.no_grad():
        assert int(model(**TOKENIZER(prompt, return_tensors="pt")).logits[0, -1].argmax()) == wanted
    fresh = sharp_model("llama")
    again = EditAgent(store=tmp_path / "store", llm=TransformersLLM(fresh, TOKENIZER, name="tiny-llama-sharp"),
                      embedder=embedder, policy=EditPolicy(editor=GraceConfig()))
    assert again.restore_weights() == [stored.id]
    with torch.no_grad():
        assert int(fresh(**TOKENIZER(prompt, return_tensors="pt")).logits[0, -1].argmax()) == wanted
    agent.forget(stored.id)
    with torch.no_grad():
        after = model(**TOKENIZER([prompt, "The weather today is"], return_tensors="pt", padding=True)).logits
    assert torch.equal(after, outputs)
