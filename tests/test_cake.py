"""CaKE on tiny random models: the edit takes on every architecture, compute leaves the model (and peft) exactly as
it was, undo is exact, saved edits check the fingerprint, the generated training data, configs and the registry.

Models come from ``test_editors.sharp_model`` (see that module's doc). The tests train with a larger step than the
default (``FAST``): the default is set for a real model, and a random 2-layer one needs far more movement.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from _models import ARCHITECTURES, tiny_config
from pydantic import ValidationError
from test_editors import TOKENIZER, UNRELATED, assert_same_weights, near_miss, next_logits, sharp_model, snapshot
from test_editors_more import (
    FACTS,
    PROMPT,
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
    CAKE,
    EDITORS,
    CakeConfig,
    CakeEdit,
    Deltas,
    ModelArch,
    WeightEdit,
    editor_config,
    make_editor,
    model_fingerprint,
)
from editagent.editors.cake import (
    FACT,
    FACT_ASKED,
    FIRST_HOP,
    FIRST_HOP_ASKED,
    FIRST_HOP_CHAIN,
    LATER_HOP,
    LATER_HOP_ASKED,
    LATER_HOP_CHAIN,
    NEUTRAL_TEXTS,
    Example,
    cloze,
    noun_phrase,
    relation_of,
)
from editagent.models import bump_weights_version
from editagent.policy import EditPolicy
from editagent.schema import EditError

FAST = CakeConfig(lr=1e-2, steps=30)
CITIZEN = "{} is a citizen of"  # the sentence template of "country of citizenship" (editagent.relations)


def cake_for(model: nn.Module, **overrides: Any) -> CAKE:
    return CAKE(model, TOKENIZER, FAST.model_copy(update=overrides), progress=False)


def own_answer(model: nn.Module, prompt: str, n_tokens: int) -> tuple[str, float]:
    """The model's greedy answer to ``prompt``, one unpadded token at a time, cut before punctuation: what the
    editor should have asked (it batches and left-pads), and its mean token log-probability."""
    ids = TOKENIZER(prompt)["input_ids"]
    chosen: list[int] = []
    logprobs: list[float] = []
    for _ in range(n_tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + chosen])).logits[0, -1]
        top = torch.log_softmax(logits.float(), dim=-1).max(dim=-1)
        if re.search(r"[\n.,;:!?()\[\]\"]", TOKENIZER.decode([*chosen, int(top.indices)])):
            break
        chosen.append(int(top.indices))
        logprobs.append(float(top.values))
    return TOKENIZER.decode(chosen).strip(), sum(logprobs) / max(1, len(logprobs))


# -- edits take -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_edited_prompt_continues_with_the_target_on_every_architecture(arch: str) -> None:
    """The down projections of the default layers (the MEMIT range) move and nothing else; the fingerprint stays."""
    model = sharp_model(arch)
    token, word = near_miss(model, PROMPT)
    fingerprint, before = model_fingerprint(model), snapshot(model)
    assert int(next_logits(model, PROMPT).argmax()) != token

    handle = cake_for(model).apply(WeightEdit(prompt=PROMPT, subject="Paris", target=word))

    assert int(next_logits(model, PROMPT).argmax()) == token
    report = handle.reports[0]
    assert report.prob_after > report.prob_before and 0 < report.steps <= FAST.steps
    arch_ = ModelArch(model)
    assert handle.method == "cake" and model_fingerprint(model) == fingerprint == handle.fingerprint
    assert set(handle.originals) == {arch_.weight_name(layer) for layer in arch_.memit_layers}
    handle.undo()
    assert_same_weights(model, before)


def test_only_the_chosen_layers_move_and_the_kl_term_keeps_neutral_text_closer() -> None:
    """``layers`` picks the adapted blocks. With the KL term the neutral sentences' next-token distributions move
    less than without it, for the same edit and the same number of steps."""
    model = sharp_model("llama")
    edit = WeightEdit(prompt=PROMPT, subject="Paris", target=near_miss(model, PROMPT)[1])
    arch = ModelArch(model)
    assert arch.memit_layers == [0]
    assert set(cake_for(model, layers=[1]).compute(edit).deltas) == {arch.weight_name(1)}

    def drift(kl_factor: float) -> float:
        handle = cake_for(model, kl_factor=kl_factor, stop_margin=1e9, steps=15).apply(edit)
        try:
            return sum(float(torch.dist(after, before)) for after, before in
                       zip(logits_of(model, list(NEUTRAL_TEXTS)), reference, strict=True))
        finally:
            handle.undo()

    reference = logits_of(model, list(NEUTRAL_TEXTS))
    assert drift(10.0) < 0.8 * drift(0.0)


def test_all_edits_of_one_call_are_trained_together() -> None:
    model = sharp_model("qwen2")
    edits = edits_for(model, FACTS)
    tokens = [TOKENIZER(edit.target, add_special_tokens=False)["input_ids"][0] for edit in edits]

    handle = cake_for(model).apply(edits)

    assert [int(next_logits(model, edit.text).argmax()) for edit in edits] == tokens
    assert len(handle.reports) == 3 and len({report.steps for report in handle.reports}) == 1
    handle.undo()


# -- training data --------------------------------------------------------------------------------------------


def test_first_hop_examples_ask_the_unedited_model_about_the_new_object() -> None:
    """A known relation (the prompt is its sentence template): facts, then per second relation the nested two-hop
    question and the chain written out, both answered with the model's own greedy answer about the new object; the
    ``n_hops`` kept are those it answers most confidently."""
    model = sharp_model("llama")
    edit = WeightEdit(prompt=CITIZEN, subject="Alice", target="Spain")
    editor = cake_for(model, n_hops=5, answer_tokens=3)
    examples = editor.examples(edit)

    assert relation_of(edit) == "country of citizenship"
    facts = [example.prompt for example in examples if example.kind == FACT]
    assert facts == ["Alice is a citizen of", "The following is true. Alice is a citizen of",
                     "Here is a fact. Alice is a citizen of"]
    assert all(example.target == " Spain" and example.edit == 0 for example in examples if example.kind == FACT)
    answers = {second: own_answer(model, cloze(second, "Spain") or "", 3) for second in FAST.hop_relations}
    capital, _ = answers["capital"]
    assert cloze("capital", "Spain") == "The capital of Spain is" and capital
    assert Example(FIRST_HOP, 0, "The capital of the country of citizenship of Alice is", " " + capital) in examples
    chain = Example(FIRST_HOP_CHAIN, 0, "Alice is a citizen of Spain. The capital of Spain is", " " + capital)
    assert chain in examples
    assert Example(FACT_ASKED, 0, "Q: What is the country of citizenship of Alice? A:", " Spain") in examples
    assert Example(FIRST_HOP_ASKED, 0, "Q: What is the capital of the country of citizenship of Alice? A:",
                   " " + capital) in examples
    answered = [second for second, (text, _) in answers.items() if text]
    assert len([example for example in examples if example.kind == FIRST_HOP]) == len(answered) >= 3
    assert not any(example.kind in (LATER_HOP, LATER_HOP_CHAIN) for example in examples)

    best = max(answered, key=lambda second: answers[second][1])
    kept = [example for example in cake_for(model, n_hops=1, answer_tokens=3).examples(edit)
            if example.kind == FIRST_HOP]
    assert [example.prompt for example in kept] == [cloze(best, "the country of citizenship of Alice")]


def test_a_bridge_adds_the_new_fact_as_the_later_hop() -> None:
    model = sharp_model("gpt2")
    edit = CakeEdit(prompt=CITIZEN, subject="Alice", target="Spain", bridges=[("Bob", "spouse")])
    examples = cake_for(model, n_hops=0).examples(edit)

    assert Example(LATER_HOP, 0, "The spouse of Bob is a citizen of", " Spain") in examples
    assert Example(LATER_HOP_CHAIN, 0, "Bob is married to Alice. Alice is a citizen of", " Spain") in examples
    assert Example(LATER_HOP_ASKED, 0, "Q: What is the country of citizenship of the spouse of Bob? A:",
                   " Spain") in examples
    assert not any(example.kind in (FIRST_HOP, FIRST_HOP_CHAIN) for example in examples)
    without = cake_for(model, n_hops=0, reasoning=False, questions=False).examples(edit)
    assert [example.kind for example in without if example.kind != FACT] == [LATER_HOP]


def test_a_relation_phrase_nests_chains_an_unknown_prompt_only_writes_them_out() -> None:
    """A prompt that is no known relation's sentence gives no nested question: only chains written out (even with
    ``reasoning`` off). ``CakeEdit.relation`` names it, and then its own sentence is trained as a fact too."""
    model = sharp_model("llama")
    plain = WeightEdit(prompt=PROMPT, subject="Paris", target="Rome")
    assert relation_of(plain) is None
    kinds = {example.kind for example in cake_for(model, reasoning=False).examples(plain)}
    assert kinds == {FACT, FIRST_HOP_CHAIN}

    named = CakeEdit(prompt=PROMPT, subject="Paris", target="Rome", relation="favourite city",
                     bridges=[("Bob", "located in the administrative territorial entity")])
    examples = cake_for(model).examples(named)
    assert Example(FACT, 0, "The favourite city of Paris is", " Rome") in examples
    assert any(example.kind == FIRST_HOP and example.prompt.endswith("of the favourite city of Paris is")
               for example in examples)
    # the bridge's relation has no noun form, so its chain is only written out
    assert [example.prompt for example in examples if example.kind.startswith("later hop")] == [
        f"Bob is located in Paris. {PROMPT}"]
    assert noun_phrase("founded by", "Sikhism") == "the founder of Sikhism"


def test_training_on_a_bridge_moves_the_later_hop_prompt_toward_the_target() -> None:
    model = sharp_model("llama")
    token, word = near_miss(model, PROMPT)
    edit = CakeEdit(prompt=PROMPT, subject="Paris", target=word, relation="favourite city",
                    bridges=[("Bob", "home town")])
    later = "The favourite city of the home town of Bob is"
    before = float(torch.log_softmax(next_logits(model, later), dim=-1)[token])

    handle = cake_for(model, n_hops=0).apply(edit)

    assert float(torch.log_softmax(next_logits(model, later), dim=-1)[token]) > before + 1.0
    handle.undo()


# -- compute, apply, undo, saved edits ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_compute_leaves_the_model_bit_identical_and_apply_gives_what_it_computed(arch: str) -> None:
    """No weight, output, hook, module, attribute, gradient flag or mode changes; no peft layer is left."""
    model = sharp_model(arch)  # gpt2: Conv1D, the weight's layout is [in, out]
    edits = edits_for(model, FACTS[:2])
    texts = [edit.text for edit in edits] + list(UNRELATED)
    model.lm_head.weight.requires_grad_(False)  # a flag of the caller's that must come back as it was
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    bump_weights_version(model)  # compute counts its writes (models.weights_version): the one attribute it may add
    modules, attributes = [name for name, _ in model.named_modules()], set(vars(model))
    weights, outputs, hooks = snapshot(model), logits_of(model, texts), hooks_on(model)
    editor = cake_for(model)

    deltas = editor.compute(edits)

    assert_same_weights(model, weights)
    assert_same_logits(model, texts, outputs)
    assert hooks_on(model) == hooks and [name for name, _ in model.named_modules()] == modules
    assert set(vars(model)) == attributes and not hasattr(model, "peft_config")
    assert {name: param.requires_grad for name, param in model.named_parameters()} == flags and not model.training
    arch_ = ModelArch(model)
    assert isinstance(deltas, Deltas) and deltas.method == "cake" and deltas.fingerprint == model_fingerprint(model)
    assert deltas.edits == edits and len(deltas.reports) == 2
    assert set(deltas.deltas) == {arch_.weight_name(layer) for layer in arch_.memit_layers}
    assert all(delta.shape == arch_.weight(layer).shape and float(delta.abs().max()) > 0
               for layer, delta in zip(arch_.memit_layers, deltas.deltas.values(), strict=True))

    # computing again gives the same edit: the adapters are seeded
    assert_deltas_write_what_apply_writes(model, editor, deltas, edits, texts, (weights, outputs))


def test_undo_restores_every_weight_bit_for_bit_even_out_of_order(caplog: pytest.LogCaptureFixture) -> None:
    model = sharp_model("mistral")
    editor = cake_for(model)
    assert_undo_out_of_order_restores(model, editor, FACTS[:1], FACTS[1:2], caplog)


def test_saved_edit_reapplies_on_the_same_model_and_refuses_another(tmp_path: Path) -> None:
    model = sharp_model("qwen2")
    edit = edits_for(model, FACTS[:1])
    request = CakeEdit(prompt=edit[0].prompt, subject=edit[0].subject, target=edit[0].target,
                       bridges=[("Bob", "spouse")])
    texts = [edit[0].text, *UNRELATED]
    weights, outputs = snapshot(model), logits_of(model, texts)
    handle = cake_for(model).apply(request)
    edited = snapshot(model), logits_of(model, texts)
    handle.save(tmp_path / "edit.pt")
    handle.undo()

    assert handle.edits == edit and type(handle.edits[0]) is WeightEdit  # the record of a CakeEdit is its fact
    assert handle.method == "cake"
    assert_saved_edit_round_trips(model, handle, tmp_path / "edit.pt", texts, edited, (weights, outputs))


def test_without_peft_the_error_names_the_extra_and_the_model_is_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    model = sharp_model("llama")
    weights = snapshot(model)
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(EditError, match=re.escape("pip install 'editagent[cake]'")):
        cake_for(model, n_hops=0).compute(WeightEdit(prompt=PROMPT, subject="Paris", target="Rome"))
    assert_same_weights(model, weights)
    assert not hasattr(model, "peft_config")


# -- configs and the registry ---------------------------------------------------------------------------------


def test_config_and_request_errors_name_the_field() -> None:
    with pytest.raises(EditError, match=r"^rank: Input should be greater than or equal to 1"):
        editor_config("cake", rank=0)
    with pytest.raises(EditError, match=r"^lr: Input should be greater than 0"):
        editor_config("cake", lr=0)
    with pytest.raises(EditError, match=r"^hop_relations: give relation phrases"):
        editor_config("cake", hop_relations=["capital", "{}"])
    with pytest.raises(EditError, match=r"^layers: give at least one"):
        editor_config("cake", layers=[])
    with pytest.raises(EditError, match=r"^radius: not a setting of cake \(its settings: .*hop_relations"):
        editor_config("cake", radius=1)
    with pytest.raises(ValidationError, match="answer_tokens"):
        CakeConfig(answer_tokens=0)
    assert CakeConfig(hop_relations=[" capital ", "capital", "head  of state"]).hop_relations == (
        "capital", "head of state")
    with pytest.raises(ValidationError, match=r"bridges: .*not an \(entity, relation\) pair"):
        CakeEdit(prompt=PROMPT, subject="Paris", target="Rome", bridges=[("Bob",)])
    with pytest.raises(ValidationError, match="bridges relation: must not be empty"):
        CakeEdit(prompt=PROMPT, subject="Paris", target="Rome", bridges=[("Bob", " ")])
    with pytest.raises(ValidationError, match=r"relation: .* without braces"):
        CakeEdit(prompt=PROMPT, subject="Paris", target="Rome", relation="{x}")
    model = sharp_model("llama")
    with pytest.raises(EditError, match="layers: 5 is out of range"):
        CAKE(model, TOKENIZER, {"layers": [0, 5]})
    with pytest.raises(EditError, match="CAKE takes a CakeConfig"):
        CAKE(model, TOKENIZER, editor_config("kne"))
    with pytest.raises(EditError, match="edits: empty"):
        cake_for(model).apply([])


def test_the_registry_and_the_policy_know_cake() -> None:
    assert EDITORS[CakeConfig] is CAKE and editor_config("cake") == CakeConfig()
    config = tiny_config("llama", len(TOKENIZER))
    config.num_hidden_layers = 6
    model = transformers.AutoModelForCausalLM.from_config(config)
    editor = make_editor(model, TOKENIZER, editor_config("cake", layers=[4, 1, 1]), progress=False)
    assert type(editor) is CAKE and editor.layers == [1, 4]
    assert make_editor(model, TOKENIZER, CakeConfig(), progress=False).layers == ModelArch(model).memit_layers == [1]
    policy = EditPolicy.model_validate({"editor": {"method": "cake", "rank": 4}})
    assert policy.editor == CakeConfig(rank=4)
    assert EditPolicy.model_validate(policy.model_dump()) == policy
