"""The other weight editors (FT-L, FT-M, GRACE, KN, KNE) on tiny random models: edits, compute without side effects,
exact undo in any order, saved edits and their fingerprint check, configs and the registry.

Models come from ``test_editors.sharp_model`` (fresh, seeded, with clear next-token margins; see that module's doc);
edit prompts end with the subject for the same reason as there.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from _models import ARCHITECTURES, tiny_config
from pydantic import ValidationError
from test_editors import (
    TOKENIZER,
    UNRELATED,
    assert_same_weights,
    clearest,
    near_miss,
    next_logits,
    sharp_model,
    snapshot,
)
from torch import nn

from editagent.editors import (
    EDITORS,
    FTL,
    FTM,
    GRACE,
    KN,
    KNE,
    CodebookDeltas,
    CodebookEdit,
    Deltas,
    FingerprintMismatch,
    FtlConfig,
    FtmConfig,
    GraceConfig,
    KnConfig,
    KneConfig,
    ModelArch,
    WeightEdit,
    apply_deltas,
    editor_config,
    make_editor,
    model_fingerprint,
)
from editagent.editors.finetune import target_rows
from editagent.editors.grace import Codebook, Entries
from editagent.eval.editing import greedy_ids
from editagent.schema import EditError

PROMPT = "The city I love the most is Paris"
FACTS = [("I went to visit Paris", "Paris"), ("Everyone admires Tokyo", "Tokyo"),
         ("My brother plays the violin", "violin")]
# FT-L's paper bound (ε = lr = 5e-4, ROME's GPT-2 XL setting) barely moves a random 2-layer model whose MLP outputs
# are a thousandth of its residual stream; a looser bound shows the method works (the paper's is tested apart).
LOOSE_FTL = {"norm_constraint": 0.05, "lr": 0.01, "steps": 50}
CONFIGS: dict[str, Any] = {"ft-l": FtlConfig(**LOOSE_FTL), "ft-m": FtmConfig(lr=0.01, steps=50),
                           "grace": GraceConfig(), "kn": KnConfig(),
                           # a tiny MLP has few neurons: 1% of them is one per layer, too few to carry an edit
                           "kne": KneConfig(lr=0.01, steps=50, neuron_share=0.1)}
METHODS = tuple(CONFIGS)
FLIPPING = ("ft-l", "ft-m", "grace", "kne")  # make the target greedy on every tiny architecture (KN: see its test)


def editor_for(model: nn.Module, method: str, **overrides: Any) -> Any:
    config = CONFIGS[method].model_copy(update=overrides)
    return make_editor(model, TOKENIZER, config, progress=False)


def logits_of(model: nn.Module, texts: list[str]) -> list[torch.Tensor]:
    """Every position's logits of each text: what "the forward pass is unchanged" compares."""
    with torch.no_grad():
        return [model(**TOKENIZER(text, return_tensors="pt")).logits[0] for text in texts]


def assert_same_logits(model: nn.Module, texts: list[str], before: list[torch.Tensor]) -> None:
    now = logits_of(model, texts)
    changed = [text for text, a, b in zip(texts, now, before, strict=True) if not torch.equal(a, b)]
    assert not changed, f"forward output differs on {changed}"


def hooks_on(model: nn.Module) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


def assert_undo_out_of_order_restores(model: nn.Module, editor: Any, first_facts: list[tuple[str, str]],
                                      second_facts: list[tuple[str, str]],
                                      caplog: pytest.LogCaptureFixture) -> dict[str, torch.Tensor]:
    """Two edits written one after the other, the older undone first: that gives exactly the weights from before it
    (with a warning), and undoing the newer then brings back what it saw (the documented caveat). Returns those."""
    before = snapshot(model)
    first = editor.apply(edits_for(model, first_facts))
    middle = snapshot(model)
    second = editor.apply(edits_for(model, second_facts))
    assert not all(torch.equal(value, middle[name]) for name, value in model.state_dict().items())

    with caplog.at_level(logging.WARNING, logger="editagent.editors.base"):
        first.undo()
    assert "out of last-in-first-out order" in caplog.text
    assert_same_weights(model, before)
    second.undo()
    assert_same_weights(model, middle)
    return middle


def assert_deltas_write_what_apply_writes(model: nn.Module, editor: Any, deltas: Any, edits: Any, texts: list[str],
                                          original: tuple[dict[str, torch.Tensor], list[torch.Tensor]]) -> None:
    """``apply_deltas(model, deltas)`` and computing again with ``editor.apply(edits)`` give the same weights and
    outputs (the editor is deterministic), and undo gives back ``original`` (weights, logits) bit for bit."""
    written = apply_deltas(model, deltas)
    by_deltas = snapshot(model), logits_of(model, texts)
    written.undo()
    handle = editor.apply(edits)
    assert_same_weights(model, by_deltas[0])
    assert_same_logits(model, texts, by_deltas[1])
    handle.undo()
    assert_same_weights(model, original[0])
    assert_same_logits(model, texts, original[1])


def assert_saved_edit_round_trips(model: nn.Module, handle: Any, path: Path, texts: list[str],
                                  edited: tuple[dict[str, torch.Tensor], list[torch.Tensor]],
                                  original: tuple[dict[str, torch.Tensor], list[torch.Tensor]]) -> None:
    """The undone ``handle``'s edit, saved at ``path`` and as the dict the agent re-applies from, writes exactly
    ``edited`` again and undoes to ``original`` (weights, logits); a model with another fingerprint refuses it and
    is left untouched."""
    for saved in (path, handle.saved()):
        again = apply_deltas(model, saved)
        assert type(again) is type(handle) and again.method == handle.method and again.edits == handle.edits
        assert_same_weights(model, edited[0])
        assert_same_logits(model, texts, edited[1])
        again.undo()
        assert_same_weights(model, original[0])
        assert_same_logits(model, texts, original[1])
    other = sharp_model("qwen2", seed=1)
    other_weights, other_hooks = snapshot(other), hooks_on(other)
    with pytest.raises(FingerprintMismatch, match=model_fingerprint(other)[:16]):
        apply_deltas(other, path)
    assert_same_weights(other, other_weights)
    assert hooks_on(other) == other_hooks


def edits_for(model: nn.Module, facts: list[tuple[str, str]]) -> list[WeightEdit]:
    return [WeightEdit(prompt=prompt, subject=subject, target=near_miss(model, prompt)[1]) for prompt, subject in facts]


# -- edits take -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", FLIPPING)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_edited_prompt_continues_with_the_target_and_an_unrelated_one_does_not_move(arch: str,
                                                                                        method: str) -> None:
    """FT-L here runs with a looser L∞ bound than the paper's (see ``LOOSE_FTL``). GRACE also leaves every
    parameter, and the model fingerprint, as they were."""
    model = sharp_model(arch)
    token, word = near_miss(model, PROMPT)
    unrelated = clearest(model, UNRELATED)
    unrelated_before = int(next_logits(model, unrelated).argmax())
    fingerprint = model_fingerprint(model)
    before = snapshot(model)
    assert int(next_logits(model, PROMPT).argmax()) != token

    handle = editor_for(model, method).apply(WeightEdit(prompt=PROMPT, subject="Paris", target=word))

    assert int(next_logits(model, PROMPT).argmax()) == token
    assert handle.reports[0].prob_after > handle.reports[0].prob_before
    assert handle.method == method and model_fingerprint(model) == fingerprint == handle.fingerprint
    if method == "grace":
        assert isinstance(handle, CodebookEdit) and not handle.originals
        assert_same_weights(model, before)
        assert int(next_logits(model, unrelated).argmax()) == unrelated_before
    elif method == "kne":  # the ensemble spans every layer
        arch = ModelArch(model)
        assert set(handle.originals) == {arch.weight_name(layer) for layer in range(arch.n_layers)}
    else:
        assert set(handle.originals) == {ModelArch(model).weight_name(ModelArch(model).rome_layer)}
    handle.undo()
    assert_same_weights(model, before)


@pytest.mark.parametrize("method", ["ft-m", "grace"])
def test_a_multi_token_target_comes_out_whole_in_greedy_generation(method: str) -> None:
    """GRACE keys one entry per target token, so generation with a KV cache (each new token checked against the
    codebook on its own) says the whole target; FT-M trains every target position."""
    model = sharp_model("llama")
    target = " river stone blue"
    wanted = TOKENIZER(target, add_special_tokens=False)["input_ids"]
    assert len(wanted) == 3
    assert greedy_ids(model, TOKENIZER, [PROMPT], 3)[0] != wanted

    handle = editor_for(model, method).apply(WeightEdit(prompt=PROMPT, subject="Paris", target=target))

    assert greedy_ids(model, TOKENIZER, [PROMPT], 3)[0] == wanted
    if method == "grace":
        assert len(handle.entries.keys) == 3
    handle.undo()


def test_ft_l_with_the_papers_bound_keeps_every_change_within_epsilon_and_raises_the_target() -> None:
    """With ROME's ε = 5e-4 no weight moves further than ε (unbounded, the same steps move them further), and the
    target's probability rises, though on a random tiny model not far enough to flip the greedy token."""
    model = sharp_model("llama")
    edit = WeightEdit(prompt=PROMPT, subject="Paris", target=near_miss(model, PROMPT)[1])
    name = ModelArch(model).weight_name(ModelArch(model).rome_layer)
    bounded = FTL(model, TOKENIZER, FtlConfig(), progress=False).compute(edit)
    free = FTL(model, TOKENIZER, FtlConfig(norm_constraint=None, stop_margin=1e9), progress=False).compute(edit)

    step = float(bounded.deltas[name].abs().max())
    assert 0 < step <= 5e-4 * (1 + 1e-4)  # up to the float32 rounding of W + ΔW
    assert float(free.deltas[name].abs().max()) > 2 * step
    report = bounded.reports[0]
    assert report.steps == 25 and report.prob_after > report.prob_before


@pytest.mark.parametrize("arch", [arch for arch in ARCHITECTURES if arch != "gemma3"])
def test_kn_moves_the_target_above_the_answer_it_replaces(arch: str) -> None:
    """The value slots gain 2·(e_target − e_answer): the target overtakes the old answer everywhere, and becomes the
    greedy token on the RMSNorm models. Behind a LayerNorm (gpt2, gptj, gpt_neox) the 32-wide random model has other
    tokens whose embeddings align better with that direction than the target's own, so there it only overtakes."""
    model = sharp_model(arch)
    token, word = near_miss(model, PROMPT)
    logits = next_logits(model, PROMPT)
    answer = int(logits.argmax())
    assert logits[token] < logits[answer]

    handle = KN(model, TOKENIZER, KnConfig(), progress=False).apply(WeightEdit(prompt=PROMPT, subject="Paris",
                                                                             target=word))

    logits = next_logits(model, PROMPT)
    assert logits[token] > logits[answer] + 10
    assert (int(logits.argmax()) == token) == (arch in ("llama", "qwen2", "mistral"))
    layers = {name for name in handle.originals}
    assert layers and layers <= {ModelArch(model).weight_name(layer) for layer in (0, 1)}
    handle.undo()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_kn_attributions_add_up_to_the_change_in_probability_and_refinement_keeps_shared_neurons(
        arch: str, caplog: pytest.LogCaptureFixture) -> None:
    """Integrated gradients are complete: over one layer they sum to P(answer | a) − P(answer | 0) (up to the
    Riemann sum's error), though the prompt before its last token runs from a KV cache and the full prompt runs
    here. Neurons kept in more than half of three prompts are some of those kept in any of them."""
    model = sharp_model(arch)
    kn = KN(model, TOKENIZER, KnConfig(ig_steps=40), progress=False)
    ids = TOKENIZER(PROMPT)["input_ids"]
    answer = int(next_logits(model, PROMPT).argmax())
    scores, activations = kn.attributions(ids, answer)[1]

    def probability(scale: float) -> float:
        def hook(_module: nn.Module, args: Any) -> Any:
            inputs = args[0].clone()
            inputs[:, -1] *= scale
            return (inputs,)
        handle = ModelArch(model).mlp_out(1).register_forward_pre_hook(hook)
        try:
            return float(torch.softmax(next_logits(model, PROMPT), dim=-1)[answer])
        finally:
            handle.remove()

    assert activations.shape == scores.shape == (ModelArch(model).key_dim(1),)
    assert float(scores.sum()) == pytest.approx(probability(1.0) - probability(0.0), rel=0.05)
    prompts = [TOKENIZER(text)["input_ids"] for text in (PROMPT, "Here is a fact. " + PROMPT, "Listen. " + PROMPT)]
    most = KN(model, TOKENIZER, KnConfig(prompt_share=0.5), progress=False).neurons(prompts, answer)
    anywhere = KN(model, TOKENIZER, KnConfig(prompt_share=0.0), progress=False).neurons(prompts, answer)
    found = {(layer, i) for layer, (indices, _) in anywhere.items() for i in indices.tolist()}
    shared = {(layer, i) for layer, (indices, _) in most.items() for i in indices.tolist()}
    assert shared and shared < found
    with caplog.at_level(logging.WARNING, logger="editagent.editors.kn"):
        KN(sharp_model("gemma3"), TOKENIZER, KnConfig(), progress=False)
    assert "normalises its MLP output" in caplog.text


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_kne_moves_only_the_value_slots_of_its_ensemble(arch: str) -> None:
    """Fewer parameters move than in FT-M: per layer, only the columns (value slots) of the ``neuron_share`` of
    neurons picked by attribution; gpt2's Conv1D keeps them as rows."""
    model = sharp_model(arch)
    arch_ = ModelArch(model)
    edit = edits_for(model, FACTS[:1])[0]
    editor = editor_for(model, "kne")
    rows = target_rows(TOKENIZER, [edit], editor.templates, torch.device("cpu"))
    ensemble = editor.ensemble(rows)
    deltas = editor.compute(edit)

    assert sorted(ensemble) == list(range(arch_.n_layers))
    for layer, columns in ensemble.items():
        assert len(columns) == math.ceil(0.1 * arch_.key_dim(layer))
        change = deltas.deltas[arch_.weight_name(layer)]
        change = change if arch != "gpt2" else change.T  # [out, in] like the down projection
        moved = torch.nonzero(change.abs().sum(dim=0)).flatten()
        assert len(moved) > 0 and set(moved.tolist()) <= set(columns.tolist())


def test_kne_attribution_is_the_first_order_change_of_the_loss_when_a_neuron_is_scaled() -> None:
    """s_i = |Σ a_i ∂L/∂a_i|: scaling neuron i's activation by (1 + ε) at every position changes the loss by
    about ε·s_i (in absolute value), for the top neuron of a layer and for an ordinary one."""
    model = sharp_model("qwen2")
    edit = edits_for(model, FACTS[:1])[0]
    editor = KNE(model, TOKENIZER, KneConfig(), progress=False)
    rows = target_rows(TOKENIZER, [edit], editor.templates, torch.device("cpu"))
    scores = editor.attribution(rows)
    module, epsilon = editor.arch.mlp_out(1), 1e-2  # central differences: the error is O(ε²)

    def loss(neuron: int, factor: float) -> float:
        def scale(_module: nn.Module, args: Any) -> Any:
            inputs = args[0].clone()
            inputs[..., neuron] *= factor
            return (inputs, *args[1:])
        handle = module.register_forward_pre_hook(scale)
        try:
            with torch.no_grad():
                logits = rows.at_sites(model(**rows.inputs()).logits)
                return -float(torch.log_softmax(logits[0].double(), dim=-1).gather(1, rows.targets[0][:, None]).mean())
        finally:
            handle.remove()

    for neuron in (int(scores[1].argmax()), 3):
        change = abs(loss(neuron, 1 + epsilon) - loss(neuron, 1 - epsilon)) / (2 * epsilon)
        assert change == pytest.approx(float(scores[1][neuron]), rel=0.01, abs=1e-4)


def test_kne_leaves_out_a_neuron_busy_on_neutral_sentences_unless_told_not_to() -> None:
    """With ``specific`` each score is divided by the neuron's typical activation on neutral sentences: the top
    neuron of a layer, made a hundred times louder on those sentences (not on the edit prompt), drops out of the
    ensemble; with ``specific=False`` it stays."""
    model = sharp_model("llama")
    edit = edits_for(model, FACTS[:1])[0]
    plain = KNE(model, TOKENIZER, KneConfig(specific=False, neuron_share=0.1), progress=False)
    rows = target_rows(TOKENIZER, [edit], plain.templates, torch.device("cpu"))
    busy = int(plain.attribution(rows)[1].argmax())

    def loud(_module: nn.Module, args: Any) -> Any:
        inputs = args[0].clone()
        inputs[..., busy] *= 100.0
        return (inputs, *args[1:])

    specific = KNE(model, TOKENIZER, KneConfig(neuron_share=0.1), progress=False)
    handle = ModelArch(model).mlp_out(1).register_forward_pre_hook(loud)
    try:
        specific.typical_activations()  # read once, then kept
    finally:
        handle.remove()
    assert busy in plain.ensemble(rows)[1].tolist()
    assert busy not in specific.ensemble(rows)[1].tolist()
    assert busy in KNE(model, TOKENIZER, KneConfig(neuron_share=0.1), progress=False).ensemble(rows)[1].tolist()


def test_fine_tuning_trains_all_edits_of_one_call_together() -> None:
    model = sharp_model("qwen2")
    edits = edits_for(model, FACTS)
    tokens = [TOKENIZER(edit.target, add_special_tokens=False)["input_ids"][0] for edit in edits]

    handle = editor_for(model, "ft-m").apply(edits)

    assert [int(next_logits(model, edit.text).argmax()) for edit in edits] == tokens
    assert len(handle.reports) == 3 and len({report.steps for report in handle.reports}) == 1
    handle.undo()


# -- compute, apply, undo -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_compute_leaves_the_model_bit_identical_and_apply_gives_what_it_computed(method: str) -> None:
    model = sharp_model("gpt2")  # Conv1D: the weight's layout is [in, out]
    edits = edits_for(model, FACTS[:2])
    texts = [edit.text for edit in edits] + list(UNRELATED)
    editor = editor_for(model, method)
    weights, outputs, hooks = snapshot(model), logits_of(model, texts), hooks_on(model)

    deltas = editor.compute(edits)

    assert_same_weights(model, weights)
    assert_same_logits(model, texts, outputs)
    assert hooks_on(model) == hooks
    assert isinstance(deltas, Deltas) and deltas.method == method and deltas.fingerprint == model_fingerprint(model)
    assert deltas.edits == edits and len(deltas.reports) == 2
    if method == "grace":
        assert isinstance(deltas, CodebookDeltas) and not deltas.deltas
        assert deltas.keys.shape == (2, ModelArch(model).key_dim(1)) and deltas.labels.tolist() == [
            TOKENIZER(edit.target, add_special_tokens=False)["input_ids"][0] for edit in edits]
    elif method in ("kn", "kne"):
        assert deltas.deltas and all(float(delta.abs().max()) > 0 for delta in deltas.deltas.values())
    else:
        name = ModelArch(model).weight_name(ModelArch(model).rome_layer)
        assert set(deltas.deltas) == {name} and float(deltas.deltas[name].abs().max()) > 0

    assert_deltas_write_what_apply_writes(model, editor, deltas, edits, texts, (weights, outputs))


@pytest.mark.parametrize("method", ["ft-l", "ft-m", "kne"])
def test_fine_tuning_undo_restores_every_weight_bit_for_bit_even_out_of_order(
        method: str, caplog: pytest.LogCaptureFixture) -> None:
    model = sharp_model("llama")
    editor = editor_for(model, method)
    middle = assert_undo_out_of_order_restores(model, editor, FACTS[:1], FACTS[1:2], caplog)

    third = editor.apply(edits_for(model, FACTS[2:]))
    third.undo()
    assert_same_weights(model, middle)


def test_grace_undo_restores_every_forward_output_bit_for_bit_in_any_order(caplog: pytest.LogCaptureFixture) -> None:
    model = sharp_model("mistral")
    grace = editor_for(model, "grace")
    edits = edits_for(model, FACTS)
    tokens = [TOKENIZER(edit.target, add_special_tokens=False)["input_ids"][0] for edit in edits]
    texts = [edit.text for edit in edits] + list(UNRELATED)
    weights, outputs, hooks = snapshot(model), logits_of(model, texts), hooks_on(model)

    handles = [grace.apply(edit) for edit in edits]

    assert hooks_on(model) == hooks + 1  # one codebook hook for the layer, whatever the number of edits
    assert [int(next_logits(model, edit.text).argmax()) for edit in edits] == tokens
    assert_same_logits(model, list(UNRELATED), outputs[len(edits):])  # outside every radius: exactly as unedited
    handles[1].undo()  # the middle one first: its prompt is exactly as before, the others keep their edits
    assert torch.equal(logits_of(model, [edits[1].text])[0], outputs[1])
    assert [int(next_logits(model, edits[i].text).argmax()) for i in (0, 2)] == [tokens[0], tokens[2]]
    handles[0].undo()
    assert hooks_on(model) == hooks + 1
    handles[2].undo()
    assert hooks_on(model) == hooks
    assert_same_logits(model, texts, outputs)
    assert_same_weights(model, weights)
    with caplog.at_level(logging.WARNING, logger="editagent.editors.grace"):
        handles[2].undo()
    assert "already undone" in caplog.text
    assert_same_logits(model, texts, outputs)


def test_grace_re_edit_of_a_prompt_overrides_the_old_answer_until_it_is_undone() -> None:
    """Both keys are the same; the newer entry wins, and its undo gives the older one back."""
    model = sharp_model("llama")
    order = next_logits(model, PROMPT).argsort(descending=True).tolist()
    words = [TOKENIZER.decode([t]) for t in order[3:60]]
    first, second = [w.strip() for w in words if w.startswith(" ") and w.strip().isalpha()
                     and len(TOKENIZER(w, add_special_tokens=False)["input_ids"]) == 1][:2]
    grace = editor_for(model, "grace")
    old = grace.apply(WeightEdit(prompt=PROMPT, subject="Paris", target=first))
    new = grace.apply(WeightEdit(prompt=PROMPT, subject="Paris", target=second))

    assert TOKENIZER.decode([int(next_logits(model, PROMPT).argmax())]).strip() == second
    new.undo()
    assert TOKENIZER.decode([int(next_logits(model, PROMPT).argmax())]).strip() == first
    old.undo()


def test_grace_splits_an_older_radius_at_the_midpoint_and_removal_gives_it_back() -> None:
    """A newer key of another label closer than two radii halves the older radius to their midpoint; one of the same
    label does not; removing the newer entries restores the older radius exactly."""
    module = nn.Linear(4, 3)
    codebook = Codebook.on(module)

    def entries(key: list[float], label: int) -> Entries:
        return Entries(torch.tensor([key]), torch.zeros(1, 3), torch.tensor([1.0]), torch.tensor([label]))

    try:
        old = entries([0.0, 0.0, 0.0, 0.0], 7)
        codebook.add(old)
        same = entries([1.2, 0.0, 0.0, 0.0], 7)
        codebook.add(same)
        assert codebook.radii.tolist() == [1.0, 1.0]  # newest first
        other = entries([-1.5, 0.0, 0.0, 0.0], 9)
        codebook.add(other)
        assert codebook.radii.tolist() == [1.0, 1.0, 0.75]  # `same` is 2.7 away: beyond two radii
        codebook.remove(other)
        assert codebook.radii.tolist() == [1.0, 1.0]
        codebook.remove(same)
        assert Codebook.of(module) is codebook and codebook.radii.tolist() == [1.0]
    finally:
        codebook.remove(old)
    assert Codebook.of(module) is None and not module._forward_hooks


# -- saved edits ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_saved_edit_reapplies_on_the_same_model_and_refuses_another(method: str, tmp_path: Path) -> None:
    model = sharp_model("qwen2")
    edit = edits_for(model, FACTS[:1])
    texts = [edit[0].text, *UNRELATED]
    weights, outputs = snapshot(model), logits_of(model, texts)
    handle = editor_for(model, method).apply(edit)
    edited = snapshot(model), logits_of(model, texts)
    handle.save(tmp_path / "edit.pt")
    handle.undo()

    assert handle.method == method and handle.edits == edit
    assert_saved_edit_round_trips(model, handle, tmp_path / "edit.pt", texts, edited, (weights, outputs))


def test_a_saved_kne_edit_keeps_only_the_ensembles_columns_and_older_dense_files_still_load(tmp_path: Path) -> None:
    """Saved deltas that live in few value slots (KNE, KN) keep those columns and their indices, not the whole
    matrix of every layer; a dense file in the first format applies the same; a broken sparse entry is refused."""
    model = sharp_model("llama")
    arch = ModelArch(model)
    weights = snapshot(model)
    handle = editor_for(model, "kne").apply(edits_for(model, FACTS[:1]))
    edited = snapshot(model)
    saved = handle.saved()
    handle.undo()

    assert saved["format"] == "editagent.weight-edit/2"
    for layer in range(arch.n_layers):
        entry = saved["deltas"][arch.weight_name(layer)]
        assert isinstance(entry, dict) and entry["dim"] == 1
        assert entry["values"].shape == (arch.value_dim(layer), len(entry["index"]))
        assert 0 < len(entry["index"]) <= math.ceil(0.1 * arch.key_dim(layer))
    dense = {**saved, "format": "editagent.weight-edit/1", "deltas": dict(handle.deltas)}
    for version in (saved, dense):
        again = apply_deltas(model, version)
        assert_same_weights(model, edited)
        again.undo()
        assert_same_weights(model, weights)
    name = arch.weight_name(0)
    broken = {**saved, "deltas": {**saved["deltas"], name: {"values": saved["deltas"][name]["values"]}}}
    with pytest.raises(EditError, match=rf"^saved: delta for '{re.escape(name)}' is neither a tensor"):
        apply_deltas(model, broken)
    assert_same_weights(model, weights)


def test_a_saved_grace_edit_that_does_not_fit_the_layer_is_refused(tmp_path: Path) -> None:
    model = sharp_model("llama")
    saved = editor_for(model, "grace").compute(edits_for(model, FACTS[:1])).saved()
    with pytest.raises(EditError, match="layer: 7 is out of range"):
        apply_deltas(model, saved | {"layer": 7})
    with pytest.raises(EditError, match="do not fit layer 1"):
        apply_deltas(model, saved | {"keys": saved["keys"][:, :5]})
    with pytest.raises(EditError, match="without labels"):
        apply_deltas(model, {k: v for k, v in saved.items() if k != "labels"})
    assert hooks_on(model) == 0


# -- configs and the registry ---------------------------------------------------------------------------------


def test_configs_validate_and_errors_name_the_field() -> None:
    with pytest.raises(EditError, match=r"^lr: Input should be greater than 0"):
        editor_config("ft-l", lr=-1)
    with pytest.raises(EditError, match=r"^norm_constraint: Input should be greater than 0"):
        editor_config("ft-m", norm_constraint=0)
    with pytest.raises(EditError, match=r"^radius: not a setting of grace \(its settings: .*epsilon"):
        editor_config("grace", radius=1.0)
    with pytest.raises(ValidationError, match="epsilon"):
        GraceConfig(epsilon=0)
    with pytest.raises(ValidationError, match="loss"):
        FtlConfig(loss="everything")
    with pytest.raises(ValidationError, match="optimizer"):
        FtmConfig(optimizer="lbfgs")
    with pytest.raises(ValidationError, match="steps"):
        GraceConfig(steps=-1)
    with pytest.raises(EditError, match=r"^layers: give at least one"):
        editor_config("kn", layers=[])
    with pytest.raises(ValidationError, match="threshold"):
        KnConfig(threshold=1.5)
    with pytest.raises(EditError, match=r"^neuron_share: Input should be less than or equal to 1"):
        editor_config("kne", neuron_share=2)
    with pytest.raises(EditError, match=r"^layers: give at least one"):
        editor_config("kne", layers=[-1])
    model = sharp_model("llama")
    with pytest.raises(EditError, match="layer: 5 is out of range"):
        FTM(model, TOKENIZER, {"layer": 5})
    with pytest.raises(EditError, match="layer: 2 is out of range"):
        GRACE(model, TOKENIZER, GraceConfig(layer=2))
    with pytest.raises(EditError, match="GRACE takes a GraceConfig, not a FtlConfig"):
        GRACE(model, TOKENIZER, FtlConfig())
    with pytest.raises(EditError, match="FTL takes a FtlConfig, not a FtmConfig"):
        FTL(model, TOKENIZER, FtmConfig())
    with pytest.raises(EditError, match="edits: empty"):
        editor_for(model, "grace").apply([])


def test_the_registry_maps_each_new_config_to_its_editor_with_paper_defaults() -> None:
    assert EDITORS[FtlConfig] is FTL and EDITORS[FtmConfig] is FTM and EDITORS[GraceConfig] is GRACE
    assert EDITORS[KnConfig] is KN and EDITORS[KneConfig] is KNE
    assert editor_config("ft-l") == FtlConfig() and editor_config("grace", epsilon=0.2) == GraceConfig(epsilon=0.2)
    ftl, ftm = FtlConfig(), FtmConfig()
    assert (ftl.loss, ftl.norm_constraint, ftl.lr, ftl.steps, ftl.optimizer) == ("prompt_last", 5e-4, 5e-4, 25, "adam")
    assert (ftm.loss, ftm.norm_constraint) == ("target", None)
    config = tiny_config("llama", len(TOKENIZER))
    config.num_hidden_layers = 30
    model = transformers.AutoModelForCausalLM.from_config(config)
    for kind, layer in [(FtlConfig(), 6), (FtmConfig(), 6), (FtmConfig(layer=3), 3), (GraceConfig(), 22)]:
        editor = make_editor(model, TOKENIZER, kind, progress=False)
        assert type(editor) is EDITORS[type(kind)] and editor.method == type(kind).method and editor.layer == layer
    kn = make_editor(model, TOKENIZER, editor_config("kn", layers=[9, 2, 2]), progress=False)
    assert type(kn) is KN and kn.layers == [2, 9]
    assert make_editor(model, TOKENIZER, KnConfig(), progress=False).layers == list(range(30))
    kne = make_editor(model, TOKENIZER, editor_config("kne", layers=[7, 3]), progress=False)
    assert type(kne) is KNE and kne.layers == [3, 7]
    assert (KneConfig().neuron_share, KneConfig().specific) == (0.01, True)
