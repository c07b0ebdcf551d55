"""TransformersLLM: batching, stop strings and the prefix cache must never change the text."""

from __future__ import annotations

import pytest
import torch
from _models import ARCHITECTURES, real_llm, tiny_llm

from editagent.decompose import mello_prompt
from editagent.llm import LLM, TransformersLLM, cut_at_stop, shared_prefix
from editagent.llm.row_cache import RowCache
from editagent.models import bump_weights_version

PREFIX = "Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Italy?\nA: Rome\n\n"
QUESTIONS = [f"Q: What is the capital of {country}?\nA:" for country in
             ("Germany", "Spain", "Japan", "Canada", "Kenya", "Peru", "Norway", "the United Kingdom")]


def test_cut_at_stop_takes_the_earliest_stop() -> None:
    assert cut_at_stop("a\nQ: b\n\nc", ["\n\n", "\nQ:"]) == ("a", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert cut_at_stop("abc", [""]) == ("abc", False)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_models_batch_equals_single_calls(arch: str) -> None:
    llm = tiny_llm(arch)
    assert isinstance(llm, LLM)
    prompts = [PREFIX + q for q in QUESTIONS[:4]]
    batched = llm.generate(prompts, max_new_tokens=6)
    single = [llm.generate([p], max_new_tokens=6)[0] for p in prompts]
    cached = llm.generate(prompts, max_new_tokens=6, prefix=PREFIX)
    assert batched == single
    assert cached == single
    assert all(len(text) > 0 for text in single)  # random weights still emit tokens


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_scores_match_between_batched_and_cached(arch: str) -> None:
    llm = tiny_llm(arch)
    prompt = PREFIX + QUESTIONS[0]
    plain = llm.score(prompt, [" Berlin", " Madrid\n"])
    cached = llm.score(prompt, [" Berlin", " Madrid\n"], prefix=PREFIX)
    assert plain == pytest.approx(cached, abs=1e-3)
    assert all(s < 0 for s in plain)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_prefix_is_held_once_per_batch_where_the_model_takes_a_pluggable_attention(arch: str) -> None:
    """The few-shot prefix's keys are stored once (batch 1) for all rows, not copied into each row."""
    llm = tiny_llm(arch)
    prompts = [PREFIX + q for q in QUESTIONS[:3]]
    logits, cache, mask, _ = llm._forward_batch([llm._encode(p, special=True)[5:] for p in prompts], PREFIX, 5)
    assert logits.shape[0] == 3 and mask.shape[1] == 5 + logits.shape[1]
    if not shared_prefix.supports_shared_prefix(llm.model):  # e.g. GPT-J in older transformers: copied per row
        assert not llm._shared and cache.layers[0].keys.shape[0] == 3
        return
    assert llm._shared
    layer = cache.layers[0]
    assert layer.prefix_keys.shape[0] == 1 and layer.prefix_keys.shape[-2] == 5
    assert layer.keys.shape[0] == 3 and layer.get_seq_length() == mask.shape[1]


def test_shared_prefix_attention_falls_back_to_the_models_own_outside_a_shared_cache() -> None:
    llm = tiny_llm("llama")
    ids = llm.tokenizer(PREFIX, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        before = llm.model(input_ids=ids).logits
        llm.model.set_attn_implementation("sdpa")
        plain = llm.model(input_ids=ids).logits
        shared_prefix.install(llm.model)
    assert torch.allclose(before, plain, atol=1e-5)


def test_real_model_batch_of_8_equals_8_single_calls_with_stop_strings() -> None:
    llm = real_llm()
    prompts = [PREFIX + q for q in QUESTIONS]
    stop = ["\n"]
    batched = llm.generate(prompts, stop=stop, max_new_tokens=12, prefix=PREFIX)
    single = [llm.generate([p], stop=stop, max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert all("\n" not in text for text in batched)  # the stop string is honoured and cut
    assert "Berlin" in batched[0]  # the trained model knows this one


def test_real_model_prefix_cache_gives_the_same_text_on_the_mello_prompt() -> None:
    llm = real_llm()
    prefix = mello_prompt().rstrip() + "\n\n"
    prompt = prefix + "Question: What is the capital of the country where the Eiffel Tower is located?\n"
    stop = ["Retrieved fact:"]
    assert llm.generate([prompt], stop=stop, max_new_tokens=40, prefix=prefix) == \
        llm.generate([prompt], stop=stop, max_new_tokens=40)


def test_real_model_scores_prefer_the_true_continuation() -> None:
    llm = real_llm()
    scores = llm.score("The capital of France is", [" Paris", " Tokyo"])
    assert scores[0] > scores[1]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma3"])
def test_tiny_models_suffixes_of_very_different_lengths_batch_equals_single_calls(arch: str) -> None:
    """Suffixes far apart in length are prefilled in groups and merged into one padded cache.

    For gemma3 (sliding window of 16 tokens) this also checks that padding inside a window does not
    shorten what a row sees: windows are counted in tokens, not cache slots."""
    llm = tiny_llm(arch)
    tails = ["", " Berlin.\n" * 3, " Paris, then Rome.\n" * 12, " Madrid" * 40]
    prompts = [PREFIX + q + tail for q, tail in zip(QUESTIONS, tails, strict=False)]
    llm.generate(prompts[:2], max_new_tokens=2, prefix=PREFIX)  # the first call learns whether caches can merge
    single = [llm.generate([p], max_new_tokens=8, prefix=PREFIX)[0] for p in prompts]
    assert llm.generate(prompts, max_new_tokens=8, prefix=PREFIX) == single
    assert llm.generate(prompts, max_new_tokens=8) == [llm.generate([p], max_new_tokens=8)[0] for p in prompts]


def test_row_cache_returns_the_longest_common_token_prefix_within_its_context_and_budget() -> None:
    cache = RowCache(max_bytes=10_000)
    keys = [torch.arange(2 * 6 * 4, dtype=torch.float32).view(2, 6, 4)]
    cache.put("ctx", [1, 2, 3, 4, 5, 6], keys, keys)
    hit = cache.longest("ctx", [1, 2, 3, 9], limit=10)
    assert hit is not None and hit.length == 3 and torch.equal(hit.keys[0], keys[0][:, :3])
    assert cache.longest("ctx", [1, 2, 3, 4, 5, 6, 7], limit=4).length == 4  # at most `limit` tokens
    assert cache.longest("other", [1, 2, 3], limit=10) is None  # another prefix: nothing to reuse
    assert cache.longest("ctx", [7, 8], limit=10) is None
    for first in range(40):  # 384 bytes an entry: the least recently used are dropped to stay within 10,000
        cache.put("ctx", [100 + first, 1], keys, keys)
    assert len(cache) <= 10_000 // 384
    assert cache.longest("ctx", [1, 2, 3], limit=10) is None  # the first entry was evicted


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_tiny_models_continue_from_the_row_cache_with_the_same_text(arch: str) -> None:
    """Round 2 prompts extend round 1 prompts + outputs (as in MeLLo): cached rows give the same text."""
    base = tiny_llm(arch)
    llm = TransformersLLM(base.model, base.tokenizer, name=f"rows-{arch}")
    fresh = TransformersLLM(base.model, base.tokenizer, name=f"norows-{arch}", row_cache_mb=0)
    prompts = [PREFIX + q for q in QUESTIONS[:4]]
    first = llm.generate(prompts, max_new_tokens=12, prefix=PREFIX)
    assert first == fresh.generate(prompts, max_new_tokens=12, prefix=PREFIX)
    follow = [p + out + "\nRetrieved fact: Paris is in France.\n" for p, out in zip(prompts, first, strict=True)]
    second = llm.generate(follow, max_new_tokens=12, prefix=PREFIX)
    assert llm.reused_tokens > 0  # round 2 continued from round 1's keys and values
    assert second == fresh.generate(follow, max_new_tokens=12, prefix=PREFIX)
    assert second == [fresh.generate([p], max_new_tokens=12, prefix=PREFIX)[0] for p in follow]


def test_cached_keys_are_dropped_when_an_editor_bumps_the_weights_version() -> None:
    """A prefix computed by the old weights must not be reused after the weights change."""
    base = tiny_llm("llama")
    model = type(base.model)(base.model.config).eval()  # a private copy: the shared tiny model stays as it is
    model.load_state_dict(base.model.state_dict())
    llm = TransformersLLM(model, base.tokenizer, name="versioned")
    prompts = [PREFIX + q for q in QUESTIONS[:3]]
    before = llm.generate(prompts, max_new_tokens=8, prefix=PREFIX)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(-3.0)
    bump_weights_version(model)
    after = llm.generate(prompts, max_new_tokens=8, prefix=PREFIX)
    fresh = TransformersLLM(model, base.tokenizer, name="fresh", prefix_cache=False)
    assert after == fresh.generate(prompts, max_new_tokens=8)
    assert after != before  # the change is visible, so the comparison above means something
