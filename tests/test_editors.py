"""Weight editors (ROME, MEMIT, AnyEdit) and editing metrics on tiny random models: adapter, key statistics,
edits, undo, saved edits, and the generation-based metrics.

Each test builds its own seeded model, so no edit leaks into the session's shared tiny models. The models
get an untied unembedding scaled up (``sharp_model``): a random 2-layer model's next-token logits are
otherwise nearly flat over a 49k vocabulary, so "the greedy token flipped" and "the unrelated greedy token
stayed" would hinge on differences of a thousandth of a logit. Edit prompts end with the subject: in a
random model the subject's value reaches later positions only through one random attention layer, too
weak to steer anything, so facts in the middle of a prompt are checked on the real model instead.
"""

from __future__ import annotations

import logging
import math
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import transformers
from _models import ARCHITECTURES, packaged_tokenizer, tiny_config, tiny_llm
from pydantic import ValidationError
from torch import nn

from editagent.editors import (
    ARCH_SPECS,
    EDITORS,
    MEMIT,
    ROME,
    AnyEdit,
    AnyEditConfig,
    Deltas,
    FingerprintMismatch,
    KnConfig,
    MemitConfig,
    ModelArch,
    RomeConfig,
    UnsupportedArchitecture,
    WeightEdit,
    apply_deltas,
    editor_config,
    editor_methods,
    key_second_moment,
    key_second_moments,
    make_editor,
    model_fingerprint,
    register_arch,
    register_editor,
    registry,
)
from editagent.editors import stats as stats_module
from editagent.editors import value as value_module
from editagent.editors.anyedit import LongEdit, choose_window_starts, row_capture
from editagent.editors.base import AppliedEdit, WeightWriter
from editagent.editors.capture import Probe, capture
from editagent.editors.config import CONFIGS
from editagent.editors.memit import through_output_norm
from editagent.editors.prompts import SplitRows, context_templates, make_batch, subject_row
from editagent.editors.rome import template_keys
from editagent.eval.editing import (
    MetricsConfig,
    Scorer,
    answer_span,
    edited_hop,
    evaluate,
    greedy_ids,
    load_cloze_templates,
    locality_prompts,
    n_gram_entropy,
    probe_for,
    rewrite_to_edit,
    summarise,
    token_recall,
)
from editagent.eval.mquake import load_mquake
from editagent.policy import EditPolicy
from editagent.schema import EditError

TOKENIZER = packaged_tokenizer()
_WORDS = ("the", "city", "river", "king", "music", "water", "stone", "blue", "green", "old", "new", "house", "light",
          "dark", "road", "small", "great", "north", "south", "language", "people", "world", "time", "year", "day",
          "sea", "mountain", "bridge", "tower", "market", "school")
# A deterministic stand-in corpus: statistics from text are one batched pass, much faster than sampling.
STATS_TEXTS = [" ".join(random.Random(i).choice(_WORDS) for _ in range(40)) for i in range(40)]
STATS_TOKENS = 1200
UNRELATED = ("My favourite colour is", "Water boils at", "The quick brown fox", "Once upon a time",
             "She opened the door and", "Numbers like seven")


def sharp_model(arch: str, seed: int = 0) -> nn.Module:
    """A fresh random 2-layer ``arch`` model whose next-token choices have clear margins (see module doc)."""
    config = tiny_config(arch, len(TOKENIZER))
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(50.0)
    return model


def next_logits(model: nn.Module, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**TOKENIZER(text, return_tensors="pt")).logits[0, -1]


def near_miss(model: nn.Module, prompt: str, skip: int = 3) -> tuple[int, str]:
    """A whole-word token the model ranks a few places below its greedy choice: not predicted now, but
    reachable by one edit, so a flip to it is meaningful."""
    order = next_logits(model, prompt).argsort(descending=True).tolist()
    for token in order[skip:]:
        word = TOKENIZER.decode([token])
        if (word.startswith(" ") and word.strip().isalpha()
                and TOKENIZER(word, add_special_tokens=False)["input_ids"] == [token]):
            return token, word.strip()
    raise AssertionError("no whole-word token found")


def clearest(model: nn.Module, prompts: tuple[str, ...]) -> str:
    """The prompt whose greedy next token wins by the widest margin: a change there is a real change."""
    def margin(prompt: str) -> float:
        top = next_logits(model, prompt).topk(2).values
        return float(top[0] - top[1])
    return max(prompts, key=margin)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def assert_same_weights(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    changed = [name for name, value in model.state_dict().items() if not torch.equal(value, before[name])]
    assert not changed, f"weights differ after undo: {changed}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("editors-cache")


def rome_for(model: nn.Module, cache: Path, **overrides: Any) -> ROME:
    """ROME with the bare prompt only: in a random model a context prefix changes the subject's key so much that
    an edit made for the average key would test luck, not the method (context templates pay off on real models)."""
    config = RomeConfig(stats_tokens=STATS_TOKENS, n_context_templates=0, **overrides)
    return ROME(model, TOKENIZER, config, stats_texts=STATS_TEXTS, cache_dir=cache, progress=False)


# -- architecture adapter ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_adapter_resolves_the_parts_editing_needs(arch: str) -> None:
    model = sharp_model(arch)
    adapter = ModelArch(model)
    assert adapter.n_layers == 2
    assert adapter.unembed is model.get_output_embeddings()
    assert isinstance(adapter.final_norm, nn.Module) and not isinstance(adapter.final_norm, nn.ModuleList)
    params = dict(model.named_parameters())
    assert params[adapter.weight_name(1)] is adapter.weight(1)
    seen: dict[str, torch.Size] = {}
    adapter.mlp_out(0).register_forward_pre_hook(lambda _m, args: seen.update(key=args[0].shape))
    adapter.mlp_out(0).register_forward_hook(lambda _m, _a, out: seen.update(value=out.shape))
    with torch.no_grad():
        model(**TOKENIZER("a short text", return_tensors="pt"))
    assert seen["key"][-1] == adapter.key_dim(0) > model.config.hidden_size  # the MLP's wide hidden layer
    assert seen["value"][-1] == adapter.value_dim(0) == model.config.hidden_size  # back into the residual
    update = torch.zeros(adapter.value_dim(0), adapter.key_dim(0))
    assert adapter.to_param_layout(update).shape == adapter.weight(0).shape
    assert adapter.spec.conv1d == (arch == "gpt2")
    assert 0 <= adapter.rome_layer < 2 and adapter.memit_layers


def test_unknown_architecture_error_names_model_type_and_fix() -> None:
    model = sharp_model("llama")
    model.config.model_type = "nonesuch"
    with pytest.raises(UnsupportedArchitecture, match=r"model_type 'nonesuch'.*register_arch"):
        ModelArch(model)
    register_arch("nonesuch", ARCH_SPECS["llama"])
    try:
        assert ModelArch(model).n_layers == 2
    finally:
        del ARCH_SPECS["nonesuch"]
    with pytest.raises(UnsupportedArchitecture, match=r"config\.model_type"):
        ModelArch(nn.Linear(2, 2))
    register_arch("broken", replace(ARCH_SPECS["llama"], mlp_out="mlp.nowhere"))
    model.config.model_type = "broken"
    try:
        with pytest.raises(UnsupportedArchitecture, match=r"no module at 'mlp\.nowhere'"):
            ModelArch(model)
    finally:
        del ARCH_SPECS["broken"]


def gemma_with_trained_gains(seed: int = 0) -> nn.Module:
    """A sharp tiny Gemma 3 whose post-feedforward norms have gains spread over two orders of magnitude, as a trained
    one's do (Gemma-3-270M: 0 to about 800, median 4 to 19 over the MEMIT layers), instead of init's all-ones, and
    whose MLP outputs have rms about 0.1 (as there) rather than init's 0.001, where the norm's ε would matter."""
    model = sharp_model("gemma3", seed)
    arch = ModelArch(model)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in range(arch.n_layers):
            weight = arch.mlp_output_norm(layer).weight  # Gemma's RMSNorm scales by 1 + weight
            weight.copy_(torch.exp(0.7 * torch.randn(weight.shape, generator=generator)) * 3 - 1)
            arch.weight(layer).mul_(100.0)
    return model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_only_gemma_normalises_the_mlp_output_and_every_editor_accepts_every_architecture(
        arch: str, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = sharp_model(arch)
    norms = [ModelArch(model).mlp_output_norm(layer) for layer in (0, 1)]
    assert all(norm is not None for norm in norms) == (arch == "gemma3")
    assert all(norm is None for norm in norms) == (arch != "gemma3")
    config = {"layers": [0, 1], "stats_tokens": STATS_TOKENS}
    for editor in (MEMIT, AnyEdit):
        caplog.clear()
        assert editor(model, TOKENIZER, config, stats_texts=STATS_TEXTS, cache_dir=cache).layers == [0, 1]
        warned = any("not yet effective" in record.getMessage() for record in caplog.records)
        assert warned == (editor is AnyEdit and arch == "gemma3")


def normalised_outputs(model: nn.Module, keys: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Layer 0's MLP outputs after its output norm, at ``keys``, with the down projection's weight ``weight``."""
    arch = ModelArch(model)
    outputs = torch.nn.functional.linear(keys.float(), arch.weight(0) if weight is None else weight.float())
    return arch.mlp_output_norm(0)(outputs).double()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_write_in_normalised_units_reaches_what_the_norm_can_reach(seed: int) -> None:
    """``through_output_norm`` gives keys k̃ and targets t such that any weight change with ΔW k̃ = t moves the
    normalised output N(W k) by r where the norm can get there: exactly for r = N(y + δ) − N(y) even with δ as
    large as y (MEMIT's goals), and to first order for any small r (only g ⊙ P⊥(r / g) of it: the norm divides out
    changes along y). Writing r as it is, as for a model without the norm, lands far off."""
    model = gemma_with_trained_gains(seed)
    arch = ModelArch(model)
    keys = row_capture(model, TOKENIZER("The old man feared the ocean")["input_ids"], [2, 4, 5],
                       Probe(arch.mlp_out(0), "input"))
    weight = arch.weight(0).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        outputs, before = keys @ weight.T, normalised_outputs(model, keys)
        gain = arch.output_gain(0).double()

        def written(residual: torch.Tensor, plain: bool = False) -> torch.Tensor:  # the least-norm ΔW writing it
            at, wanted = (keys.double(), residual) if plain else through_output_norm(arch, 0, residual, keys)
            return normalised_outputs(model, keys, weight + wanted.T @ torch.linalg.pinv(at.T)) - before

        delta = outputs.norm(dim=1, keepdim=True) * torch.randn(outputs.shape, generator=generator,
                                                                dtype=torch.double) / outputs.shape[1] ** 0.5
        rotation = arch.mlp_output_norm(0)((outputs + delta).float()).double() - before
        small = 0.01 * before.norm(dim=1, keepdim=True) * torch.randn(before.shape, generator=generator,
                                                                      dtype=torch.double) / before.shape[1] ** 0.5
        unit = outputs / outputs.norm(dim=1, keepdim=True)
        reachable = gain * (small / gain - (small / gain * unit).sum(dim=1, keepdim=True) * unit)
        moved_rotation, moved_small, plain = written(rotation), written(small), written(rotation, plain=True)

    assert float((moved_rotation - rotation).norm()) < 0.01 * float(rotation.norm())
    assert float((moved_small - reachable).norm()) < 0.05 * float(reachable.norm())
    assert float((plain - rotation).norm()) > 0.5 * float(rotation.norm())
    # A feature the norm silences (gain 0, as some of Gemma-3-270M's are) is not divided by zero: the floored gain
    # keeps its share of the change bounded, so it cannot swamp rms(y) and rescale the other features.
    with torch.no_grad():
        arch.mlp_output_norm(0).weight[3] = -1.0
        silenced = through_output_norm(arch, 0, small, keys)[1]
        without = through_output_norm(arch, 0, small.index_fill(1, torch.tensor([3]), 0.0), keys)[1]
    assert bool(torch.isfinite(silenced).all())
    assert float(silenced.norm()) < 3 * float(without.norm())


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_memit_goal_is_the_top_output_with_delta_added_at_the_value_site(arch: str, cache: Path) -> None:
    """Without an output norm δ is fitted at the top block's output, and the goal is that output plus δ; with one,
    δ is fitted behind the norm, and the goal is the output with the normalised MLP output moved from N(y) to
    N(y + δ): a change that MLP can make, whatever the size of the residual stream."""
    model = gemma_with_trained_gains() if arch == "gemma3" else sharp_model(arch)
    memit = MEMIT(model, TOKENIZER, MemitConfig(layers=[0, 1], stats_tokens=STATS_TOKENS), stats_texts=STATS_TEXTS,
                  cache_dir=cache, progress=False)
    rows = [subject_row(TOKENIZER, "I went to visit {}", "Paris"),
            subject_row(TOKENIZER, "{} is where we met", "Tokyo")]
    batch = make_batch(TOKENIZER, rows, torch.device("cpu"))
    site, top = memit.value_site, memit.top
    y, now = capture(model, batch.inputs(), [Probe(site), Probe(top)], batch.at_subject)
    deltas = 0.5 * y.norm(dim=1, keepdim=True) * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    deltas /= y.shape[1] ** 0.5

    goals = memit.goals_with(batch, [(i, last, deltas[i]) for i, (_, last) in enumerate(rows)])

    norm = memit.arch.mlp_output_norm(1)
    if norm is None:
        assert site is top
        expected = now + deltas
    else:
        assert site is memit.arch.mlp_out(1)
        with torch.no_grad():
            expected = now + norm(y + deltas) - norm(y)
    torch.testing.assert_close(goals, expected.double(), rtol=1e-4, atol=1e-5)
    assert float((goals - now).norm()) > 0.1 * float(deltas.norm())


def test_memit_edits_models_that_normalise_the_mlp_output_and_keeps_most_unrelated_prompts(cache: Path) -> None:
    """One edit on each of six tiny Gemma 3 models: the edit takes on all six, and most unrelated prompts keep
    their next token (a 2-layer random model whose normalised MLP output outweighs its residual stream is fragile,
    so this is counted over all of them: 26 of 36 here). Written without the norm handled (δ at the block output,
    written as if the MLP output were added as it is), 2 of 36 kept theirs."""
    prompt = "I went to visit Paris"
    flipped, kept = [], 0
    for seed in range(6):
        model = gemma_with_trained_gains(seed)
        token, word = near_miss(model, prompt)
        unrelated_before = [int(next_logits(model, text).argmax()) for text in UNRELATED]
        before = snapshot(model)
        config = MemitConfig(layers=[0, 1], stats_tokens=STATS_TOKENS, n_context_templates=0)
        memit = MEMIT(model, TOKENIZER, config, stats_texts=STATS_TEXTS, cache_dir=cache, progress=False)
        assert memit.value_site is memit.arch.mlp_out(1)

        handle = memit.apply(WeightEdit(prompt=prompt, subject="Paris", target=word))

        flipped.append(int(next_logits(model, prompt).argmax()) == token)
        kept += sum(int(next_logits(model, text).argmax()) == was for text, was in zip(UNRELATED, unrelated_before,
                                                                                         strict=True))
        handle.undo()
        assert_same_weights(model, before)
    assert all(flipped), flipped
    assert kept >= 18, kept


def test_default_layers_scale_with_depth() -> None:
    config = tiny_config("llama", len(TOKENIZER))
    config.num_hidden_layers = 30
    adapter = ModelArch(transformers.AutoModelForCausalLM.from_config(config))
    assert adapter.rome_layer == 6
    assert adapter.memit_layers == [3, 4, 5, 6, 7, 8]


# -- key statistics ----------------------------------------------------------------------------------------


def test_key_statistics_match_hand_computed_moment_and_are_cached(cache: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = sharp_model("llama")
    text = STATS_TEXTS[0]
    n = len(TOKENIZER(text)["input_ids"])
    moment = key_second_moment(model, TOKENIZER, 1, texts=[text], n_tokens=n, cache_dir=tmp_path, progress=False)
    keys: list[torch.Tensor] = []
    ModelArch(model).mlp_out(1).register_forward_pre_hook(lambda _m, args: keys.append(args[0][0].double()))
    with torch.no_grad():
        model(**TOKENIZER(text, return_tensors="pt"))
    expected = keys[0].T @ keys[0] / n
    assert moment.dtype == torch.float64 and moment.shape == (64, 64)
    torch.testing.assert_close(moment, expected, rtol=1e-9, atol=1e-12)
    assert torch.allclose(moment, moment.T)
    assert float(torch.linalg.eigvalsh(moment).min()) > -1e-12 * float(moment.diagonal().max())
    files = list((tmp_path / "stats").glob("*-layer1-texts*-*.pt"))
    assert len(files) == 1 and not list((tmp_path / "stats").glob("*.tmp"))

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(stats_module, "_accumulate", fail)
    again = key_second_moment(model, TOKENIZER, 1, texts=[text], n_tokens=n, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, moment)


def test_normalised_key_statistics_divide_each_key_by_its_output_norms_divisor(tmp_path: Path) -> None:
    """Behind an MLP output norm, ``normalised=True`` gives E[k̃ k̃ᵀ] with k̃ = k / s(W k), in its own cache file
    beside the plain moment (which ROME keeps using); a model without the norm gets the plain moment."""
    model = gemma_with_trained_gains()
    text = STATS_TEXTS[0]
    n = len(TOKENIZER(text)["input_ids"])
    options: dict[str, Any] = {"texts": [text], "n_tokens": n, "cache_dir": tmp_path, "progress": False}
    normed = key_second_moments(model, TOKENIZER, [1], normalised=True, **options)[1]
    plain = key_second_moment(model, TOKENIZER, 1, **options)
    arch = ModelArch(model)
    caught: list[tuple[torch.Tensor, torch.Tensor]] = []
    arch.mlp_out(1).register_forward_hook(lambda _m, args, out: caught.append((args[0][0].double(), out[0])))
    with torch.no_grad():
        model(**TOKENIZER(text, return_tensors="pt"))
    keys, outputs = caught[0]
    scaled = keys / arch.output_divisor(1, outputs).double()[:, None]
    torch.testing.assert_close(normed, scaled.T @ scaled / n, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(plain, keys.T @ keys / n, rtol=1e-9, atol=1e-12)
    assert float((normed - plain).norm()) > 0.1 * float(plain.norm())
    assert len(list((tmp_path / "stats").glob("*-layer1-normed-texts*.pt"))) == 1
    assert len(list((tmp_path / "stats").glob("*-layer1-texts*.pt"))) == 1

    llama = sharp_model("llama")
    torch.testing.assert_close(key_second_moments(llama, TOKENIZER, [1], normalised=True, **options)[1],
                               key_second_moment(llama, TOKENIZER, 1, **options))
    assert not list((tmp_path / "stats").glob(f"{model_fingerprint(llama)[:20]}-*normed*"))


def test_key_statistics_sampled_from_the_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = sharp_model("gpt2")
    moment = key_second_moment(model, TOKENIZER, 0, n_tokens=200, cache_dir=tmp_path, progress=False)
    assert moment.shape == (128, 128) and moment.dtype == torch.float64
    assert float(torch.linalg.eigvalsh(moment).min()) > -1e-12 * float(moment.diagonal().max())
    assert list((tmp_path / "stats").glob("*-layer0-sampled-200.pt"))
    assert list((tmp_path / "stats").glob("*-samples-200.pt"))
    first = stats_module.sample_token_ids(model, TOKENIZER, 100, progress=False)
    assert torch.equal(first, stats_module.sample_token_ids(model, TOKENIZER, 100, progress=False))
    assert first.numel() >= 100 and len(set(first[:, -1].tolist())) > 1  # sampled, not one greedy path


def test_key_statistics_reject_bad_input(tmp_path: Path) -> None:
    model = sharp_model("llama")
    with pytest.raises(EditError, match="n_tokens"):
        key_second_moment(model, TOKENIZER, 0, n_tokens=0, cache_dir=tmp_path)
    with pytest.raises(EditError, match="layers: 7 is out of range"):
        key_second_moment(model, TOKENIZER, 7, texts=["x"], cache_dir=tmp_path)


# -- ROME --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_rome_flips_the_edited_prompt_and_leaves_an_unrelated_one(arch: str, cache: Path) -> None:
    model = sharp_model(arch)
    prompt = "The city I love the most is Paris"
    token, word = near_miss(model, prompt)
    unrelated = clearest(model, UNRELATED)
    unrelated_before = int(next_logits(model, unrelated).argmax())
    before = snapshot(model)
    assert int(next_logits(model, prompt).argmax()) != token

    handle = rome_for(model, cache).apply(WeightEdit(prompt=prompt, subject="Paris", target=word))

    assert int(next_logits(model, prompt).argmax()) == token
    assert int(next_logits(model, unrelated).argmax()) == unrelated_before
    assert set(handle.originals) == {ModelArch(model).weight_name(0)}
    assert handle.reports[0].prob_after > handle.reports[0].prob_before
    handle.undo()
    assert_same_weights(model, before)


def test_rome_adds_exactly_delta_at_every_context_templates_key(cache: Path) -> None:
    """The update is solved for every template's key at once (not their average), so each prompt the value was
    optimised on gets the full δ: ΔW k_t = δ for every template t."""
    model = sharp_model("llama")
    rome = ROME(model, TOKENIZER, RomeConfig(stats_tokens=STATS_TOKENS, n_context_templates=3, key_ridge=0.0),
                stats_texts=STATS_TEXTS, cache_dir=cache, progress=False)
    edit = WeightEdit(prompt="The city I love the most is Paris", subject="Paris", target=near_miss(model, "x")[1])
    keys = template_keys(model, TOKENIZER, rome.arch, rome.layer, [edit], rome.templates)[0]
    weight_name = rome.arch.weight_name(rome.layer)

    handle = rome.apply(edit)

    update = handle.deltas[weight_name].double()
    written = rome.arch.to_param_layout(update) @ keys.T  # [out, T]: what each template's key now adds
    assert written.shape[1] == 4
    torch.testing.assert_close(written, written[:, :1].expand_as(written), rtol=1e-4, atol=1e-6)
    assert float(written[:, 0].norm()) > 0
    handle.undo()


@pytest.mark.parametrize(("rule", "lr"), [("gradient", 0.3), ("adam", 0.05)])
def test_one_value_step_moves_delta_by_lr_in_units_of_the_outputs_scale(rule: str, lr: float) -> None:
    """The step is scale-free: one normalised gradient step moves δ by exactly lr·‖v‖; one Adam step moves every
    coordinate by lr·rms(v), i.e. also lr·‖v‖ in norm, only spread over all directions."""
    model = sharp_model("llama")
    arch = ModelArch(model)
    edit = WeightEdit(prompt="The city I love the most is Paris", subject="Paris", target=near_miss(model, "x")[1])
    config = RomeConfig(step_rule=rule, lr=lr, steps=1, stop_margin=math.inf, weight_decay=0.0, kl_factor=0.0,
                        n_context_templates=0)
    fit = value_module.optimise_values(model, TOKENIZER, [edit], arch.mlp_out(0), arch.value_dim(0), ["{}"],
                                       config)[0]

    assert fit.report.steps == 1
    assert float(fit.delta.norm()) == pytest.approx(lr * float(fit.init.norm()), rel=1e-3)
    spread = fit.delta.abs() / fit.delta.abs().max()
    # Adam moves every coordinate by the same amount; the gradient step only where the gradient points.
    assert (float(spread.min()) > 0.99) == (rule == "adam")


def test_an_attention_sink_row_does_not_set_the_scale_of_delta() -> None:
    """A one-token subject opening the bare prompt sits at position 0, where deeper layers put the attention sink's
    output (on SmolLM2's layer 12, 26,000 against about 160 elsewhere). δ's steps and clamp follow the rewrite row
    of median norm, so that row cannot make δ a hundred times larger than any other row's output."""
    torch.manual_seed(0)
    problem = value_module.ValueProblem(rows=[([1], 0, 1)] * 4 + [([2], 0, 1)], target=[3], n_rewrite=4,
                                        subject="Paris", target_text="x")
    config = RomeConfig(step_rule="gradient", lr=10.0, clamp_norm_factor=4.0)
    fitting = value_module._Fitting.new(problem, 16, config, torch.device("cpu"))
    typical = torch.randn(3, 16)
    fitting.start(torch.cat([1000 * torch.randn(1, 16), typical]))
    median = typical[int(typical.norm(dim=1).argsort()[1])]

    assert torch.equal(fitting.init, median)
    fitting.theta.grad = torch.randn(16)
    for _ in range(5):
        fitting.step(config)
    assert float(fitting.delta().detach().norm()) == pytest.approx(4.0 * float(median.norm()), rel=1e-4)


@pytest.mark.parametrize("rule", ["gradient", "adam"])
def test_values_fitted_in_one_batch_equal_values_fitted_one_at_a_time(rule: str) -> None:
    """Each edit in a batch has its own δ, loss and stop test, and leaves the batch when it stops: the δ, step
    count and probabilities match a fit of that edit alone (a shared optimiser, a shared stop or a row fed the
    wrong δ would not)."""
    model = sharp_model("llama")
    arch = ModelArch(model)
    edits = []
    for prompt, subject in [("I went to visit Paris", "Paris"), ("Everyone admires Tokyo", "Tokyo"),
                            ("My brother plays the violin", "violin"), ("The old man feared the ocean", "ocean")]:
        edits.append(WeightEdit(prompt=prompt, subject=subject, target=near_miss(model, prompt)[1]))
    edits.append(WeightEdit(prompt="We had dinner with Alice", subject="Alice", target="the ocean and the river"))
    config = MemitConfig(step_rule=rule, lr=0.05 if rule == "adam" else 0.1, steps=12, stop_margin=1.0)
    site, width, templates = arch.block(1), arch.value_dim(1), context_templates(2)
    together = value_module.optimise_values(model, TOKENIZER, edits, site, width, templates, config)
    alone = [value_module.optimise_values(model, TOKENIZER, [e], site, width, templates, config)[0] for e in edits]

    assert len({fit.report.steps for fit in alone}) > 1  # some stop early, so the batch really shrinks
    for one, other in zip(together, alone, strict=True):
        assert one.report.steps == other.report.steps
        torch.testing.assert_close(one.delta, other.delta, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(one.init, other.init)
        assert one.report.prob_after == pytest.approx(other.report.prob_after, rel=1e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_blocks_below_the_site_run_once_and_the_values_match_running_them_every_step(
        arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks under the site see no δ, so their suffix outputs are recorded on the first step and replayed: the fit
    is the same as one that runs them every step, and the block under the site's MLP runs once per prefix/suffix."""
    model = sharp_model(arch)
    arch_ = ModelArch(model)
    edit = WeightEdit(prompt="I went to visit Paris", subject="Paris", target="the ocean and the river")
    config = MemitConfig(steps=6, stop_margin=math.inf)
    problem = value_module.edit_problem(TOKENIZER, edit, context_templates(1))
    calls = {True: 0, False: 0}
    fits = {}
    for replay in (True, False):
        if not replay:  # nothing to replay: every step runs every block
            monkeypatch.setattr(value_module, "blocks_below", lambda *_args: [])

        def count(*_args: Any, _replay: bool = replay) -> None:
            calls[_replay] += 1
        handle = arch_.mlp_out(0).register_forward_hook(count)
        try:
            fits[replay] = value_module.fit_values(model, TOKENIZER, [problem], arch_.block(1), arch_.value_dim(1),
                                                   config)[0]
        finally:
            handle.remove()

    monkeypatch.undo()
    assert value_module.blocks_below(model, arch_.mlp_out(1)) == [arch_.block(0)]
    assert fits[True].report.steps == fits[False].report.steps == 6
    torch.testing.assert_close(fits[True].delta, fits[False].delta, rtol=1e-4, atol=1e-6)
    assert calls[True] == 2 < calls[False] == 8  # prefix + first step, against prefix + every one of 7 passes


def test_memit_second_pass_writes_what_the_first_left_of_the_goals(cache: Path) -> None:
    model = sharp_model("llama")
    memit = MEMIT(model, TOKENIZER, MemitConfig(layers=[0, 1], stats_tokens=STATS_TOKENS), stats_texts=STATS_TEXTS,
                  cache_dir=cache, progress=False)
    texts = ("The old man feared the ocean", "We had dinner with Alice")
    rows = [(TOKENIZER(text)["input_ids"], [2, 4]) for text in texts]
    top = memit.arch.block(1)

    def keys_at(layer: int) -> torch.Tensor:
        return torch.cat([row_capture(model, ids, at, Probe(memit.arch.mlp_out(layer), "input")) for ids, at in rows])

    def current() -> torch.Tensor:
        return torch.cat([row_capture(model, ids, at, Probe(top)) for ids, at in rows])

    start = current()
    goals = start + torch.randn(start.shape, generator=torch.Generator().manual_seed(0), dtype=start.dtype)
    missing = {}
    for passes in (1, 2):
        memit.config = memit.config.model_copy(update={"passes": passes})
        writer = WeightWriter(model)
        memit.spread(goals, writer, lambda layer: (keys_at(layer), current()))
        missing[passes] = float((goals - current()).norm())
        writer.restore()
    assert missing[2] < 0.7 * missing[1] < 0.7 * float((goals - start).norm())


def test_memit_refit_raises_edits_the_write_left_short_of_the_stop_margin(cache: Path) -> None:
    """A large λ keeps one write well short of the goals; a refit finds δ again on the written model and writes
    again, lifting every edit's greedy margin (an edit already past the stop test would get δ = 0)."""
    model = sharp_model("llama")
    facts = [("I went to visit Paris", "Paris"), ("Everyone admires Tokyo", "Tokyo"),
             ("My brother plays the violin", "violin"), ("The old man feared the ocean", "ocean")]
    edits, tokens = [], []
    for prompt, subject in facts:
        token, word = near_miss(model, prompt)
        edits.append(WeightEdit(prompt=prompt, subject=subject, target=word))
        tokens.append(token)

    def margins(refits: int) -> list[float]:
        config = MemitConfig(layers=[0, 1], stats_tokens=STATS_TOKENS, n_context_templates=0,
                             mom2_update_weight=1e4, stop_margin=2.0, refits=refits)
        handle = MEMIT(model, TOKENIZER, config, stats_texts=STATS_TEXTS, cache_dir=cache, progress=False).apply(edits)
        found = []
        for edit, token in zip(edits, tokens, strict=True):
            logits = next_logits(model, edit.text)
            found.append(float(logits[token] - logits.scatter(0, torch.tensor([token]), float("-inf")).max()))
        handle.undo()
        return found

    once, refit = margins(0), margins(1)
    assert min(once) < 2.0, once  # the write fell short of the stop test
    assert all(after > before + 0.5 for before, after in zip(once, refit, strict=True)), (once, refit)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cached_prefix_logits_equal_a_full_forward(arch: str) -> None:
    """The value optimisation runs only the tokens from the subject on, over a cached prefix: it must see
    exactly what a plain forward pass sees (left padding, an empty prefix, Gemma 3's sliding window)."""
    model = sharp_model(arch)
    texts = [("The following is true. The city I love the most is Paris, said the old man to us all", "Paris"),
             ("Paris is a", "Paris"), ("Here is a fact. Paris is big", "Paris")]
    rows = [(*subject_row(TOKENIZER, text.replace(subject, "{}", 1), subject), 2) for text, subject in texts]
    split = SplitRows.build(TOKENIZER, rows, torch.device("cpu"))
    with torch.no_grad():
        got = value_module._SuffixRunner(model, split).logits()
        for (ids, _, n), logits in zip(rows, got, strict=True):
            expected = model(input_ids=torch.tensor([ids])).logits[0, -n:]
            torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_rome_on_the_shared_tiny_model_with_its_own_attention_undoes_cleanly(cache: Path) -> None:
    """``tiny_llm`` installs a custom attention implementation; editing must neither depend on it nor leak."""
    model = tiny_llm("llama").model
    before = snapshot(model)
    handle = rome_for(model, cache).apply(WeightEdit(prompt="The city I love the most is Paris", subject="Paris",
                                                     target="river"))
    assert handle.reports[0].prob_after > handle.reports[0].prob_before
    handle.undo()
    assert_same_weights(model, before)


def test_undo_restores_every_weight_bit_for_bit_even_out_of_order(cache: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    model = sharp_model("llama")
    before = snapshot(model)
    rome = rome_for(model, cache)
    first = rome.apply([WeightEdit(prompt="The city I love the most is Paris", subject="Paris", target="river"),
                        WeightEdit(prompt="{} is where I live", subject="Berlin", target="stone")])
    assert len(first.reports) == 2
    assert not all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
    middle = snapshot(model)
    second = rome.apply(WeightEdit(prompt="My uncle comes from Tokyo", subject="Tokyo", target="music"))
    with caplog.at_level(logging.WARNING, logger="editagent.editors.base"):
        first.undo()  # not last-in-first-out: still exactly the weights from before `first`
    assert "out of last-in-first-out order" in caplog.text
    assert_same_weights(model, before)
    second.undo()  # brings back what `second` saw, i.e. `first`'s edit: the documented LIFO caveat
    assert_same_weights(model, middle)
    first.undo()  # a second undo is a no-op
    assert_same_weights(model, middle)


def test_undo_in_last_in_first_out_order_gives_no_warning(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The later edit's undo bumps the weights' version but leaves exactly what the earlier edit wrote."""
    model = sharp_model("llama")
    before = snapshot(model)
    rome = rome_for(model, cache)
    first = rome.apply(WeightEdit(prompt="The city I love the most is Paris", subject="Paris", target="river"))
    second = rome.apply(WeightEdit(prompt="My uncle comes from Tokyo", subject="Tokyo", target="music"))
    with caplog.at_level(logging.WARNING, logger="editagent.editors.base"):
        second.undo()
        first.undo()
    assert "out of last-in-first-out order" not in caplog.text
    assert_same_weights(model, before)


def test_saved_edit_reapplies_on_the_same_model_and_refuses_another(cache: Path, tmp_path: Path) -> None:
    model = sharp_model("qwen2")
    fingerprint = model_fingerprint(model)
    handle = rome_for(model, cache).apply(WeightEdit(prompt="The city I love the most is Paris", subject="Paris",
                                                     target="river"))
    assert model_fingerprint(model) == fingerprint == handle.fingerprint  # edits leave the fingerprint alone
    edited = snapshot(model)
    handle.save(tmp_path / "edit.pt")
    handle.undo()

    again = apply_deltas(model, tmp_path / "edit.pt")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, edited[name], rtol=0, atol=1e-6)
    again.undo()

    other = sharp_model("qwen2", seed=1)
    other_before = snapshot(other)
    with pytest.raises(FingerprintMismatch, match=rf"{fingerprint[:16]}.*{model_fingerprint(other)[:16]}"):
        apply_deltas(other, handle.saved())
    assert_same_weights(other, other_before)
    with pytest.raises(EditError, match="not a saved weight edit"):
        apply_deltas(other, {"deltas": {}})


def test_weight_edit_and_config_validation_name_the_field(cache: Path) -> None:
    edit = WeightEdit(prompt="{} is located in", subject="The Eiffel Tower", target="Rome")
    assert edit.target == " Rome" and edit.text == "The Eiffel Tower is located in"
    assert WeightEdit(prompt="Paris is nice", subject="Paris", target="x").template == "{} is nice"
    with pytest.raises(ValidationError, match="prompt"):
        WeightEdit(prompt="The capital of France is", subject="Germany", target="Berlin")
    with pytest.raises(ValidationError, match="target"):
        WeightEdit(prompt="France is", subject="France", target="  ")
    with pytest.raises(ValidationError, match="lr"):
        RomeConfig(lr=-1)
    with pytest.raises(ValidationError, match="layers"):
        MemitConfig(layers=[])
    with pytest.raises(EditError, match="layer: 5 is out of range"):
        ROME(sharp_model("llama"), TOKENIZER, {"layer": 5}, cache_dir=cache)
    arch = ModelArch(sharp_model("llama"))
    assert arch.check_layer(None, "layer", arch.rome_layer) == arch.rome_layer
    with pytest.raises(EditError, match="layer: give a layer number"):
        arch.check_layer(None)
    with pytest.raises(EditError, match="edits: empty"):
        rome_for(sharp_model("llama"), cache).apply([])


# -- MEMIT -------------------------------------------------------------------------------------------------


def test_memit_writes_five_edits_at_once_and_undoes_exactly(cache: Path) -> None:
    model = sharp_model("llama")
    facts = [("I went to visit Paris", "Paris"), ("Everyone admires Tokyo", "Tokyo"),
             ("My brother plays the violin", "violin"), ("The old man feared the ocean", "ocean"),
             ("We had dinner with Alice", "Alice")]
    edits, tokens = [], []
    for prompt, subject in facts:
        token, word = near_miss(model, prompt)
        edits.append(WeightEdit(prompt=prompt, subject=subject, target=word))
        tokens.append(token)
    before = snapshot(model)
    config = MemitConfig(layers=[0, 1], stats_tokens=STATS_TOKENS, n_context_templates=0)
    memit = MEMIT(model, TOKENIZER, config, stats_texts=STATS_TEXTS, cache_dir=cache, progress=False)

    handle = memit.apply(edits)

    flipped = [int(next_logits(model, edit.text).argmax()) == token for edit, token in zip(edits, tokens, strict=True)]
    assert all(flipped), flipped
    assert set(handle.originals) == {ModelArch(model).weight_name(0), ModelArch(model).weight_name(1)}
    handle.undo()
    assert_same_weights(model, before)


# -- AnyEdit -----------------------------------------------------------------------------------------------


# In a 2-layer random model the top layer's output reaches no later token, so a window's value can only steer its
# first token: windows of one token make the test meaningful (each token its own key and value).
WINDOW = 1
LONG_TARGET = ("river stone blue king music water old house light road small great north sea mountain bridge tower "
               "market school green dark people world time year")


def target_logprob(model: nn.Module, prompt: str, target: str) -> float:
    ids = TOKENIZER(prompt)["input_ids"]
    wanted = TOKENIZER(target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + wanted[:-1]])).logits[0, len(ids) - 1:]
    return float(logits.log_softmax(-1).gather(1, torch.tensor(wanted)[:, None]).sum())


@pytest.mark.parametrize("refits", [0, 1])
def test_anyedit_writes_a_long_target_window_by_window_and_undoes_exactly(cache: Path, refits: int) -> None:
    model = sharp_model("llama")
    edit = LongEdit(prompt="The story of Paris", subject="Paris", target=LONG_TARGET)
    wanted = TOKENIZER(edit.target, add_special_tokens=False)["input_ids"]
    assert len(wanted) >= 25
    before_lp = target_logprob(model, edit.text, edit.target)
    before_recall = token_recall(greedy_ids(model, TOKENIZER, [edit.text], len(wanted))[0], wanted)
    before = snapshot(model)
    config = AnyEditConfig(layers=[0, 1], window_tokens=WINDOW, stats_tokens=STATS_TOKENS, steps=30, refits=refits)
    handle = AnyEdit(model, TOKENIZER, config, stats_texts=STATS_TEXTS, cache_dir=cache, progress=False).apply(edit)

    assert len(handle.reports) == -(-len(wanted) // WINDOW)  # one value per window
    after_recall = token_recall(greedy_ids(model, TOKENIZER, [edit.text], len(wanted))[0], wanted)
    assert target_logprob(model, edit.text, edit.target) > before_lp + 20
    assert after_recall >= 0.8 > before_recall + 0.5, (before_recall, after_recall)
    assert handle.method == "anyedit" and set(handle.originals) == {ModelArch(model).weight_name(i) for i in (0, 1)}
    handle.undo()
    assert_same_weights(model, before)


def test_window_starts_fall_before_the_most_distinctive_key_within_the_allowed_lengths() -> None:
    scores = [0.0] * 40
    scores[13], scores[26] = 5.0, 4.0  # keys at content words
    assert choose_window_starts(scores, 40, longest=16, shortest=10) == [0, 13, 26]
    scores[28] = 9.0  # within 10..16 of 13: preferred to 26
    assert choose_window_starts(scores, 40, longest=16, shortest=10) == [0, 13, 28]
    scores[31] = 99.0  # beyond the longest window from 13: never reached
    assert 31 not in choose_window_starts(scores, 40, longest=16, shortest=10)
    assert choose_window_starts([0.0] * 40, 40, longest=16, shortest=10) == [0, 16, 32]  # ties: the longest window
    assert choose_window_starts([1.0] * 10, 10, longest=16, shortest=10) == [0]  # fits in one window


def test_long_edit_keeps_newlines_and_names_the_field() -> None:
    code = "def f(x):\n    return x + 1"
    assert LongEdit(prompt="{} is defined as", subject="f", target=code).target == " " + code
    with pytest.raises(ValidationError, match="target"):
        LongEdit(prompt="{} is", subject="f", target="   ")
    with pytest.raises(ValidationError, match="prompt"):
        LongEdit(prompt="Nothing here", subject="f", target="x")
    with pytest.raises(ValidationError, match="window_tokens"):
        AnyEditConfig(window_tokens=0)


# -- compute, then apply, and the registry ------------------------------------------------------------------


FACTS = [("I went to visit Paris", "Paris"), ("Everyone admires Tokyo", "Tokyo"),
         ("My brother plays the violin", "violin"), ("The old man feared the ocean", "ocean")]


def near_miss_edits(model: nn.Module, facts: list[tuple[str, str]]) -> list[WeightEdit]:
    return [WeightEdit(prompt=prompt, subject=subject, target=near_miss(model, prompt)[1]) for prompt, subject in facts]


@pytest.mark.parametrize("method", ["rome", "memit", "anyedit"])
def test_compute_leaves_every_weight_bit_identical_and_apply_writes_what_it_computed(
        method: str, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``compute`` writes into the weights while it works (ROME edit after edit, MEMIT layer after layer and again for
    a refit, AnyEdit window by window) and puts every weight back bit for bit; ``apply`` gives exactly the weights
    that writing the computed deltas gives, and its undo restores the original ones."""
    model = sharp_model("llama")
    options: dict[str, Any] = {"stats_texts": STATS_TEXTS, "cache_dir": cache, "progress": False}
    common: dict[str, Any] = {"stats_tokens": STATS_TOKENS, "n_context_templates": 0}
    edits: list[Any]
    if method == "rome":
        config: Any = RomeConfig(**common)
        edits = near_miss_edits(model, FACTS[:2])
    elif method == "memit":  # a stiff write, so the refit writes again
        config = MemitConfig(layers=[0, 1], mom2_update_weight=1e4, stop_margin=2.0, refits=1, **common)
        edits = near_miss_edits(model, FACTS)
    else:
        config = AnyEditConfig(layers=[0, 1], window_tokens=2, steps=10, stats_tokens=STATS_TOKENS)
        edits = [LongEdit(prompt="The story of Paris", subject="Paris", target="river stone blue king music water")]
    editor = make_editor(model, TOKENIZER, config, **options)
    editor.load_statistics()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}

    def unchanged() -> list[str]:
        return [name for name, param in model.named_parameters() if not torch.equal(param, before[name])]

    with caplog.at_level(logging.INFO, logger="editagent.editors.memit"):
        deltas = editor.compute(edits)
    assert not unchanged()
    if method == "memit":
        assert "writing again" in caplog.text  # the refit ran and wrote
    assert isinstance(deltas, Deltas) and deltas.method == method and deltas.fingerprint == model_fingerprint(model)
    assert set(deltas.deltas) == {ModelArch(model).weight_name(0 if method == "rome" else i) for i in (0, 1)}
    assert all(delta.abs().max() > 0 for delta in deltas.deltas.values())
    assert len(deltas.edits) == (0 if method == "anyedit" else len(edits)) and deltas.reports

    written = apply_deltas(model, deltas)
    by_deltas = {name: param.detach().clone() for name, param in model.named_parameters()}
    written.undo()
    assert not unchanged()
    handle = editor.apply(edits)
    assert all(torch.equal(param, by_deltas[name]) for name, param in model.named_parameters())
    assert set(unchanged()) == set(deltas.deltas)
    handle.undo()
    assert not unchanged()


def test_the_registry_maps_each_config_type_to_its_editor_and_errors_name_the_field(cache: Path) -> None:
    model = sharp_model("llama")
    assert {RomeConfig: ROME, MemitConfig: MEMIT, AnyEditConfig: AnyEdit}.items() <= EDITORS.items()
    assert all(editor.config_type is config for config, editor in EDITORS.items())  # one config type per editor
    options: dict[str, Any] = {"stats_texts": STATS_TEXTS, "cache_dir": cache, "progress": False}
    for config, kind in [(None, ROME), (RomeConfig(layer=1), ROME), (MemitConfig(layers=[0, 1]), MEMIT),
                         (editor_config("anyedit", layers=[0, 1]), AnyEdit)]:
        editor = make_editor(model, TOKENIZER, config, **options)
        assert type(editor) is kind and editor.config == (config or RomeConfig())
        assert editor.method == type(editor.config).method
    assert editor_config("memit", refits=0) == MemitConfig(refits=0)
    with pytest.raises(EditError, match=r"^method: 'nope' is not a weight editor; use one of rome, memit, anyedit\b"):
        editor_config("nope")
    with pytest.raises(EditError, match=r"^lyers: not a setting of memit \(its settings: .*layers"):
        editor_config("memit", lyers=[1])
    with pytest.raises(EditError, match=r"^lr: Input should be greater than 0"):
        editor_config("rome", lr=-1)
    with pytest.raises(EditError, match=r"^layers: give at least one"):
        editor_config("memit", layers=[])
    with pytest.raises(EditError, match="MEMIT takes a MemitConfig, not a RomeConfig"):
        MEMIT(model, TOKENIZER, RomeConfig(), **options)


class ToyConfig(RomeConfig):
    """A new editor's settings, as a user would write them: ROME's, under another name."""

    method: ClassVar[str] = "toy-rome"


class ToyRome(ROME):
    method = "toy-rome"
    config_type = ToyConfig


def test_a_new_editor_is_one_registration_and_usable_by_name_everywhere(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import editagent.editors as editors_package

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the toy leaves with the test
    assert "toy-rome" not in editor_methods()
    with pytest.raises(EditError, match="'toy-rome' is not a weight editor"):
        editor_config("toy-rome")
    register_editor(ToyConfig, ToyRome)
    assert editor_methods()[-1] == "toy-rome" and "toy-rome" in editor_methods(long_targets=False)
    assert editor_config("toy-rome", layer=1) == ToyConfig(layer=1)
    assert CONFIGS["toy-rome"] is ToyConfig and EDITORS[ToyConfig] is ToyRome
    assert editors_package.ToyRome is ToyRome and editors_package.ToyConfig is ToyConfig
    assert {"ToyRome", "ToyConfig"} <= set(editors_package.__dir__())
    assert EditPolicy(editor={"method": "toy-rome", "layer": 0}).editor == ToyConfig(layer=0)
    model = sharp_model("llama")
    prompt = "The city I love the most is Paris"
    token, word = near_miss(model, prompt)
    editor = make_editor(model, TOKENIZER, editor_config("toy-rome", stats_tokens=STATS_TOKENS, n_context_templates=0),
                         stats_texts=STATS_TEXTS, cache_dir=cache, progress=False)
    assert type(editor) is ToyRome
    handle = editor.apply(WeightEdit(prompt=prompt, subject="Paris", target=word))
    assert handle.method == "toy-rome" and int(next_logits(model, prompt).argmax()) == token
    handle.undo()


def test_registering_a_taken_name_or_a_mismatched_pair_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Duplicate(RomeConfig):
        method: ClassVar[str] = "rome"

    class Nameless(RomeConfig):
        method: ClassVar[str] = ""

    class Mismatched(KnConfig):
        method: ClassVar[str] = "toy-kn"

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # a wrongly accepted one leaves too

    before = list(editor_methods())
    with pytest.raises(EditError, match=r"^method: 'rome' is already registered \(config RomeConfig, editor ROME\); "
                                        "give Duplicate another method name"):
        register_editor(Duplicate, ROME)
    with pytest.raises(EditError, match=r"^method: 'rome' is already registered"):
        register_editor(RomeConfig, "editagent.editors.rome:ROME")  # the built-in, twice
    with pytest.raises(EditError, match="config_type: Nameless has no method name"):
        register_editor(Nameless, ROME)
    with pytest.raises(EditError, match=r"ToyRome\.config_type is ToyConfig, not Mismatched"):
        register_editor(Mismatched, ToyRome)
    with pytest.raises(EditError, match=r"'package\.module:Class'"):
        register_editor(ToyConfig, "editagent.editors.rome.ROME")
    assert list(editor_methods()) == before and CONFIGS["rome"] is RomeConfig and EDITORS[RomeConfig] is ROME


def test_editor_configs_import_without_torch() -> None:
    """The CLI builds configs; loading torch for that would cost it seconds."""
    code = ("import sys; from editagent.editors.config import RomeConfig; from editagent.policy import EditPolicy; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- editing metrics ---------------------------------------------------------------------------------------


def test_token_recall_and_fluency_helpers() -> None:
    assert token_recall([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert token_recall([1, 9, 2, 3], [1, 2, 3, 4]) == 0.75  # in order, gaps allowed
    assert token_recall([4, 3, 2, 1], [1, 2, 3, 4]) == 0.25
    assert token_recall([], [1, 2]) == 0.0
    assert n_gram_entropy("a b c d e f g") > n_gram_entropy("a a a a a a a") == 0.0


def test_mquake_rewrite_becomes_a_weight_edit_and_a_probe(mquake_dir: Path) -> None:
    cases = load_mquake(mquake_dir / "MQuAKE-CF-3k-dev600.json", limit=5)
    clozes = load_cloze_templates(mquake_dir / "cloze_templates.json")
    case = next(c for c in cases if c.case_id == 5)
    rewrite = case.requested_rewrite[0]
    edit = rewrite_to_edit(rewrite)
    assert edit == WeightEdit(prompt="{} is located in the continent of", subject="United Kingdom", target="Asia")
    assert edit.text == "United Kingdom is located in the continent of" and edit.target == " Asia"
    assert rewrite_to_edit(rewrite, clozes, prompt_from="cloze").template == "{} is located in the continent of"
    probe = probe_for(case, 0, clozes)
    assert edited_hop(case, rewrite) == 1
    assert probe.answers[0] == "Asia" and "Asian continent" in probe.answers
    assert probe.paraphrases == ["Q: Which continent is United Kingdom located in?\nA:"]
    assert len(probe.portability) == 3 and probe.portability_answers[0] == "Asia"


def test_answer_span_reads_the_first_clause_of_the_first_line() -> None:
    assert answer_span(" the United States of America, born in") == "the United States of America"
    assert answer_span(" the United States of America. He is") == "the United States of America"
    assert answer_span(" football.\n\nThe NFL has a") == "football"
    assert answer_span(' a "Saber" in the') == 'a "Saber" in the'
    assert answer_span(" a mix of classical and contemporary. He") != answer_span(" a mix of classical and rock.")
    assert answer_span("\n\nParis (France)") == "Paris"


def test_metrics_are_fractions_and_locality_drops_only_after_a_destructive_edit(mquake_dir: Path) -> None:
    model = sharp_model("llama")
    cases = load_mquake(mquake_dir / "MQuAKE-CF-3k-dev600.json", limit=12)
    probes = [probe_for(case) for case in cases[:2]]
    scorer = Scorer(model, TOKENIZER, locality_prompts(cases[2:], 6),
                    MetricsConfig(answer_tokens=4, locality_tokens=4, fluency_tokens=8))
    untouched = evaluate(scorer, probes, None, progress=False)
    for scores in untouched:
        assert scores.locality == scores.locality_exact == 1.0
        for value in (scores.reliability, scores.generalization, scores.portability or 0.0):
            assert 0.0 <= value <= 1.0
    before = snapshot(model)

    def destroy(edits: list[WeightEdit]) -> AppliedEdit:
        writer = WeightWriter(model)
        arch = ModelArch(model)
        for layer in range(arch.n_layers):
            writer.add(arch.weight_name(layer), torch.randn_like(arch.weight(layer)) * 5)
        return writer.finish(method="noise", edits=edits, fingerprint="x")

    damaged = evaluate(scorer, probes, destroy, progress=False)
    assert all(scores.locality_exact < 1.0 for scores in damaged)
    assert all(scores.locality_exact <= scores.locality < 1.0 for scores in damaged)
    assert_same_weights(model, before)  # each edit was undone
    summary = summarise("noise", "single", damaged)
    assert summary.n_edits == 2 and 0.0 <= summary.locality < 1.0
