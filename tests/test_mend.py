"""MEND on tiny random models: the hypernetwork starts as the identity (one gradient step), a short training run lowers
the edit loss and carries over to a held-out edit, compute/apply/undo are exact, only the configured down projections
move, and networks or saved edits made for another model are refused.

Models come from ``test_editors.sharp_model`` (see that module's doc); edit prompts end with the subject.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from _models import tiny_config
from test_editors import TOKENIZER, UNRELATED, assert_same_weights, near_miss, sharp_model, snapshot
from test_editors_more import (
    assert_deltas_write_what_apply_writes,
    assert_same_logits,
    assert_saved_edit_round_trips,
    assert_undo_out_of_order_restores,
    edits_for,
    hooks_on,
    logits_of,
)
from torch import nn

from editagent.editors import (
    EDITORS,
    MEND,
    Deltas,
    MendConfig,
    MendNetwork,
    ModelArch,
    WeightEdit,
    editor_config,
    make_editor,
    model_fingerprint,
)
from editagent.editors.finetune import edit_loss, target_logprobs, target_rows
from editagent.editors.mend import checkpoint_path, save_network
from editagent.policy import EditPolicy
from editagent.schema import EditError
from editagent.train.mend import TrainingItem, TrainingSettings, evaluate_network, train

TEMPLATES = ("I went to visit {}", "Everyone admires {}", "My brother plays the {}", "We talked for hours about {}",
             "She wrote a song about the {}", "They built a house near the {}")
SUBJECTS = ("Paris", "Tokyo", "violin", "river", "mountain", "bridge", "market")
FACTS = [("I went to visit Paris", "Paris"), ("Everyone admires Tokyo", "Tokyo")]


def network_for(model: nn.Module, layers: list[int], edit_lr: float = 0.5, seed: int = 0) -> MendNetwork:
    torch.manual_seed(seed)
    return MendNetwork.for_model(ModelArch(model), layers, rank=16, edit_lr=edit_lr)


def mend_for(model: nn.Module, network: MendNetwork, **config: Any) -> MEND:
    return MEND(model, TOKENIZER, MendConfig(rank=16, layers=network.layers, **config), network=network,
                progress=False)


def gradient(model: nn.Module, edits: list[WeightEdit], names: list[str]) -> list[torch.Tensor]:
    """The edit loss's gradient for the weights ``names``, by plain autograd."""
    params = dict(model.named_parameters())
    rows = target_rows(TOKENIZER, edits, ["{}"], torch.device("cpu"))
    for name in names:
        params[name].requires_grad_(True)
    try:
        logits = rows.at_sites(model(**rows.inputs()).logits)
        loss = edit_loss(logits, rows, target_logprobs(logits, rows.targets), "target")
        return list(torch.autograd.grad(loss, [params[name] for name in names]))
    finally:
        for name in names:
            params[name].requires_grad_(False)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_new_network_is_the_identity_so_an_untrained_mend_is_one_gradient_step(arch: str) -> None:
    model = sharp_model(arch)
    network = network_for(model, [0, 1], edit_lr=0.5)
    u, delta = torch.randn(5, network.key_dim), torch.randn(5, network.value_dim)
    network.train()  # also with running statistics in use
    network(0, u * 3 + 1, delta * 2)
    network.eval()
    u_new, delta_new = network(0, u, delta)
    assert torch.equal(u_new, u) and torch.equal(delta_new, delta)

    edits = edits_for(model, FACTS)
    names = [ModelArch(model).weight_name(layer) for layer in (0, 1)]
    deltas = mend_for(model, network).compute(edits)
    assert set(deltas.deltas) == set(names)
    for name, grad in zip(names, gradient(model, edits, names), strict=True):  # the stored layout (Conv1D: [in, out])
        assert torch.allclose(deltas.deltas[name], -0.5 * grad.double(), rtol=1e-4, atol=1e-6 * float(grad.abs().max()))

    with torch.no_grad():
        network.blocks[0].up.add_(0.1)  # once trained, it is no longer the identity
    assert not torch.equal(network(0, u, delta)[0], u)


def training_items(model: nn.Module) -> list[TrainingItem]:
    return [TrainingItem(WeightEdit(prompt=template.format(subject), subject=subject,
                                    target=near_miss(model, template.format(subject))[1]))
            for template in TEMPLATES for subject in SUBJECTS]


def test_training_lowers_the_edit_loss_and_the_trained_mend_raises_a_held_out_target() -> None:
    model = sharp_model("llama")
    items = training_items(model)
    trained, held_out = items[:-2], items[-2:]
    network = network_for(model, [0, 1], edit_lr=1e-3)
    settings = TrainingSettings(steps=30, lr=1e-3, lr_lr=0.1, c_loc=0.1, paraphrases=False, checkpoint_every=10)
    before = evaluate_network(model, TOKENIZER, network, trained[:8], UNRELATED[:2], settings)
    untrained = mend_for(model, network_for(model, [0, 1], edit_lr=1e-3)).compute(held_out[0].edit).reports[0]
    weights = snapshot(model)

    history = train(model, TOKENIZER, network, trained, list(UNRELATED), settings, progress=False)

    assert_same_weights(model, weights)  # trained through the update: the base model never moves
    assert len(history) == 30 and not network.training
    after = evaluate_network(model, TOKENIZER, network, trained[:8], UNRELATED[:2], settings)
    assert after["edit_loss_after"] < before["edit_loss_after"] - 0.5
    assert after["edit_loss_before"] == pytest.approx(before["edit_loss_before"])  # the same edits, same base
    assert float(network.count[0]) > 0 and all(lr > 1e-3 for lr in network.log_lr.exp().tolist())

    report = mend_for(model, network).apply(held_out[0].edit)
    assert report.reports[0].prob_after > max(2 * report.reports[0].prob_before, untrained.prob_after)
    report.undo()
    assert_same_weights(model, weights)


def test_a_stopped_training_run_resumes_where_it_stopped_and_refuses_other_settings(tmp_path: Path) -> None:
    model = sharp_model("qwen2")
    items = training_items(model)[:10]
    settings = TrainingSettings(steps=4, lr=1e-3, paraphrases=False, checkpoint_every=2, locality_per_step=1)
    whole = train(model, TOKENIZER, network_for(model, [1]), items, list(UNRELATED), settings, progress=False)

    state = tmp_path / "state.pt"
    first = train(model, TOKENIZER, network_for(model, [1]), items, list(UNRELATED),
                  settings.model_copy(update={"steps": 2}), state_path=state, progress=False)
    resumed_network = network_for(model, [1], seed=5)  # its own init is replaced by the saved state
    resumed = train(model, TOKENIZER, resumed_network, items, list(UNRELATED), settings, state_path=state,
                    progress=False)
    assert [h["step"] for h in first] == [1, 2] and [h["step"] for h in resumed] == [1, 2, 3, 4]
    assert [h["loss"] for h in resumed[:2]] == [h["loss"] for h in first]
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in whole], rel=1e-5)
    with pytest.raises(EditError, match="other settings"):
        train(model, TOKENIZER, network_for(model, [1]), items, list(UNRELATED),
              settings.model_copy(update={"lr": 1e-2}), state_path=state, progress=False)


# -- compute, apply, undo -------------------------------------------------------------------------------------------


def test_compute_leaves_the_model_bit_identical_and_apply_gives_what_it_computed() -> None:
    model = sharp_model("gpt2")  # Conv1D: the weight's layout is [in, out]
    edits = edits_for(model, FACTS)
    texts = [edit.text for edit in edits] + list(UNRELATED)
    editor = mend_for(model, network_for(model, [0, 1]))
    weights, outputs, hooks = snapshot(model), logits_of(model, texts), hooks_on(model)
    grads = [param.requires_grad for param in model.parameters()]

    deltas = editor.compute(edits)

    assert_same_weights(model, weights)
    assert_same_logits(model, texts, outputs)
    assert hooks_on(model) == hooks and [param.requires_grad for param in model.parameters()] == grads
    assert isinstance(deltas, Deltas) and deltas.method == "mend" and deltas.fingerprint == model_fingerprint(model)
    assert deltas.edits == edits and len(deltas.reports) == 2
    assert all(report.steps == 1 and report.prob_after != report.prob_before for report in deltas.reports)
    assert all(float(delta.abs().max()) > 0 for delta in deltas.deltas.values())

    assert_deltas_write_what_apply_writes(model, editor, deltas, edits, texts, (weights, outputs))


def test_undo_restores_every_weight_bit_for_bit_even_out_of_order(caplog: pytest.LogCaptureFixture) -> None:
    model = sharp_model("llama")
    editor = mend_for(model, network_for(model, [0, 1]))
    assert_undo_out_of_order_restores(model, editor, FACTS[:1], FACTS[1:], caplog)


def four_layer_llama() -> nn.Module:
    config = tiny_config("llama", len(TOKENIZER))
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("layers", [None, [2]])
def test_only_the_configured_layers_down_projections_move(layers: list[int] | None) -> None:
    model = four_layer_llama()
    arch = ModelArch(model)
    chosen = layers or [1, 2, 3]  # None: the last three blocks
    network = network_for(model, chosen)
    editor = MEND(model, TOKENIZER, MendConfig(rank=16, layers=layers), network=network, progress=False)
    assert editor.layers == chosen
    before = snapshot(model)

    handle = editor.apply(edits_for(model, FACTS[:1]))

    moved = {name for name, value in model.state_dict().items() if not torch.equal(value, before[name])}
    assert moved == {arch.weight_name(layer) for layer in chosen} == set(handle.originals)
    handle.undo()
    assert_same_weights(model, before)


# -- checkpoints and saved edits --------------------------------------------------------------------------------------


def test_saved_edit_reapplies_on_the_same_model_and_refuses_another(tmp_path: Path) -> None:
    model = sharp_model("qwen2")
    edit = edits_for(model, FACTS[:1])
    texts = [edit[0].text, *UNRELATED]
    weights, outputs = snapshot(model), logits_of(model, texts)
    handle = mend_for(model, network_for(model, [0, 1])).apply(edit)
    edited = snapshot(model), logits_of(model, texts)
    handle.save(tmp_path / "edit.pt")
    handle.undo()

    assert handle.method == "mend" and handle.edits == edit
    assert_saved_edit_round_trips(model, handle, tmp_path / "edit.pt", texts, edited, (weights, outputs))


def test_a_missing_checkpoint_or_one_for_another_model_gives_a_clear_error(tmp_path: Path) -> None:
    model = sharp_model("llama")
    weights = snapshot(model)
    edit = edits_for(model, FACTS[:1])
    with pytest.raises(EditError, match=r"no trained hypernetwork at .*benchmarks/mend_train\.py --model"):
        MEND(model, TOKENIZER, MendConfig(rank=16), cache_dir=tmp_path, progress=False).compute(edit)
    assert_same_weights(model, weights)

    network = network_for(model, [0, 1])
    fingerprint = model_fingerprint(model)
    saved = save_network(network, checkpoint_path(fingerprint, [0, 1], 16, tmp_path), fingerprint, "llama")
    found = MEND(model, TOKENIZER, MendConfig(rank=16), cache_dir=tmp_path, progress=False).compute(edit)
    given = mend_for(model, network).compute(edit)
    assert all(torch.equal(found.deltas[name], given.deltas[name]) for name in given.deltas)

    other = sharp_model("llama", seed=1)
    with pytest.raises(EditError, match=r"trained for another model .*train one for this model"):
        MEND(other, TOKENIZER, MendConfig(rank=16, checkpoint=str(saved)), progress=False).compute(edit)
    with pytest.raises(EditError, match=r"trained for \{'layers': \[0, 1\].*this editor edits \{'layers': \[1\]"):
        MEND(model, TOKENIZER, MendConfig(rank=16, layers=[1], checkpoint=str(saved)), progress=False).compute(edit)
    with pytest.raises(EditError, match="network: built for"):
        MEND(model, TOKENIZER, MendConfig(rank=16, layers=[1]), network=network, progress=False)
    assert_same_weights(model, weights)


def test_the_config_registry_and_policy_know_mend() -> None:
    assert EDITORS[MendConfig] is MEND and MEND.config_type is MendConfig
    config = editor_config("mend", rank=8)
    assert config == MendConfig(rank=8) and config.layers is None and config.checkpoint is None
    assert type(make_editor(sharp_model("llama"), TOKENIZER, config, progress=False)) is MEND
    assert EditPolicy(editor={"method": "mend", "layers": [1]}).editor == MendConfig(layers=[1])
    policy = EditPolicy(editor=MendConfig(checkpoint="/elsewhere/mend.pt"))
    assert EditPolicy.model_validate(policy.model_dump(mode="json")) == policy  # the dump names its editor
    with pytest.raises(EditError, match="edit_lr"):
        editor_config("mend", edit_lr=0)
    assert math.isclose(MendNetwork(layers=[0], key_dim=4, value_dim=2, rank=99, edit_lr=0.25).edit_lr(0).item(), 0.25)
    assert MendNetwork(layers=[0], key_dim=4, value_dim=2, rank=99, edit_lr=0.25).rank == 6
