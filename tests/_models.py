"""Models shared by tests, loaded once per test session.

Tiny randomly initialised models of each supported architecture exercise code paths fast;
the real packaged SmolLM2 checks behaviour that only a trained model shows.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import transformers

from editagent.llm import TransformersLLM
from editagent.models import load_causal_lm, resolve_model_path

ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma3", "gpt2", "gptj", "gpt_neox")


@cache
def real_llm() -> TransformersLLM:
    """The default packaged model (SmolLM2-135M-Instruct), converted once into the cache."""
    return TransformersLLM.load()


@cache
def packaged_tokenizer() -> Any:
    return transformers.AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-instruct"))


def tiny_config(arch: str, vocab_size: int) -> Any:
    small = {"vocab_size": vocab_size}
    if arch == "llama":
        return transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, **small)
    if arch == "qwen2":
        return transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, **small)
    if arch == "mistral":
        return transformers.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, sliding_window=None, **small)
    if arch == "gemma3":
        return transformers.Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                             sliding_window=16, **small)
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=2048, **small)
    if arch == "gptj":
        return transformers.GPTJConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=2048, **small)
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, max_position_embeddings=2048, **small)
    raise ValueError(f"arch: unknown {arch!r}")


@cache
def tiny_llm(arch: str) -> TransformersLLM:
    """A randomly initialised 2-layer model of ``arch`` with the packaged tokenizer (seeded)."""
    tokenizer = packaged_tokenizer()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer)))
    model.eval()
    return TransformersLLM(model, tokenizer, name=f"tiny-{arch}")


__all__ = ["ARCHITECTURES", "load_causal_lm", "real_llm", "tiny_llm"]
