"""TransformersLLM: greedy, batched, stop-string-aware generation for any local causal LM.

Why a hand-written decoding loop rather than ``model.generate``: the MeLLo and
PokeMQA few-shot prompts are ~1,000 tokens and identical for every question.
The loop computes that prefix's KV cache once, copies it for each batch, and
feeds only each prompt's own suffix; finished rows leave the batch so the
rest run faster. Prompts are laid out as [prefix][left padding][suffix], with
the attention mask and position ids saying where the padding is.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from editagent.llm.base import cut_at_stop
from editagent.models import DEFAULT_LLM, load_causal_lm

logger = logging.getLogger(__name__)

_PREFIX_CACHE_SLOTS = 4


class TransformersLLM:
    """Wraps a Hugging Face causal LM and its tokenizer; works on CPU and CUDA unchanged."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "custom", batch_size: int = 8,
                 prefix_cache: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.calls = 0
        self._prefix_cache_enabled = prefix_cache and not _has_sliding_window(model)
        self._prefixes: OrderedDict[str, tuple[list[int], Any]] = OrderedDict()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_LLM, *, device: str | None = None, **options: Any) -> TransformersLLM:
        model, tokenizer = load_causal_lm(name_or_path, device=device)
        return cls(model, tokenizer, name=name_or_path, **options)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- public ----------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]:
        """Greedy completions, cut before the first stop string; same order as ``prompts``."""
        if not prompts:
            return []
        self.calls += len(prompts)
        ids = [self._encode(p, special=True) for p in prompts]
        reuse = self._reusable(ids, prompts, prefix)
        # Similar lengths together waste less compute on padding.
        order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
        results: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start: start + self.batch_size]
            texts = self._generate_batch([ids[i][reuse:] for i in chunk], prefix if reuse > 0 else None, reuse,
                                         stop, max_new_tokens)
            for i, text in zip(chunk, texts, strict=True):
                results[i] = text
        return results

    def score(self, prompt: str, continuations: Sequence[str], *, prefix: str | None = None) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after ``prompt``."""
        return self.score_many([(prompt, c) for c in continuations], prefix=prefix)

    @torch.inference_mode()
    def score_many(self, pairs: Sequence[tuple[str, str]], *, prefix: str | None = None) -> list[float]:
        """``score`` for many (prompt, continuation) pairs at once, reusing a cached ``prefix``."""
        if not pairs:
            return []
        self.calls += len(pairs)
        prompt_ids = [self._encode(p, special=True) for p, _ in pairs]
        ids = [self._encode(p + c, special=True) for p, c in pairs]
        cont_lengths = [len(full) - _common_length(full, head) for full, head in zip(ids, prompt_ids, strict=True)]
        reuse = self._reusable(ids, [p for p, _ in pairs], prefix)
        scores: list[float] = [0.0] * len(pairs)
        for start in range(0, len(pairs), self.batch_size):
            rows = list(range(start, min(start + self.batch_size, len(pairs))))
            logits = self._forward_batch([ids[i][reuse:] for i in rows], prefix if reuse else None, reuse)[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for slot, i in enumerate(rows):
                length = cont_lengths[i]
                if length == 0:
                    continue
                targets = torch.tensor(ids[i][-length:], device=self.device)
                predicted = logprobs[slot, -length - 1: -1]
                scores[i] = float(predicted.gather(1, targets[:, None]).sum())
        return scores

    # -- internals -------------------------------------------------------------------------------

    def _encode(self, text: str, *, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    @torch.inference_mode()
    def _prefix(self, prefix: str) -> tuple[list[int], Any]:
        """The prefix's token ids and KV cache (batch 1), computed once per distinct prefix."""
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
            return self._prefixes[prefix]
        ids = self._encode(prefix, special=True)
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
        self._prefixes[prefix] = (ids, out.past_key_values)
        if len(self._prefixes) > _PREFIX_CACHE_SLOTS:
            self._prefixes.popitem(last=False)
        logger.debug("cached a %d-token prefix", len(ids))
        return self._prefixes[prefix]

    @torch.inference_mode()
    def _forward_batch(self, suffixes: list[list[int]], prefix: str | None, reuse: int) -> tuple[Any, ...]:
        """One forward pass over left-padded ``suffixes`` after the first ``reuse`` cached prefix tokens.

        Returns (logits over the suffix positions, cache, attention mask, position ids of the suffix).
        """
        n, device = len(suffixes), self.device
        pad = int(self.tokenizer.pad_token_id)
        width = max(len(s) for s in suffixes)
        input_ids = torch.full((n, width), pad, dtype=torch.long, device=device)
        suffix_mask = torch.zeros((n, width), dtype=torch.long, device=device)
        for row, ids in enumerate(suffixes):
            if ids:
                input_ids[row, width - len(ids):] = torch.tensor(ids, device=device)
                suffix_mask[row, width - len(ids):] = 1
        if prefix is not None:
            prefix_ids, prefix_kv = self._prefix(prefix)
            cache = copy.deepcopy(prefix_kv)
            if reuse < len(prefix_ids):
                cache.crop(reuse - len(prefix_ids))  # a negative count drops that many trailing tokens
            if n > 1:
                cache.batch_repeat_interleave(n)
            mask = torch.cat([torch.ones((n, reuse), dtype=torch.long, device=device), suffix_mask], 1)
        else:
            cache, mask = None, suffix_mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values, mask, positions

    def _reusable(self, ids: list[list[int]], prompts: Sequence[str], prefix: str | None) -> int:
        """How many leading tokens of every prompt the cached ``prefix`` covers (0: do not use it).

        Only the longest common *token* prefix of the joint tokenisation is reused: BPE may
        merge across the prefix boundary, and the output must not change.
        """
        if not (prefix and self._prefix_cache_enabled and all(p.startswith(prefix) for p in prompts)):
            return 0
        prefix_ids, _ = self._prefix(prefix)
        reuse = min(_common_length(prefix_ids, row) for row in ids)
        return min(reuse, min(len(row) for row in ids) - 1)  # keep at least one token to feed

    @torch.inference_mode()
    def _generate_batch(self, suffixes: list[list[int]], prefix: str | None, reuse: int, stop: Sequence[str],
                        max_new_tokens: int) -> list[str]:
        """Greedy decoding of ``suffixes``, each continuing the first ``reuse`` tokens of ``prefix``."""
        n, device = len(suffixes), self.device
        logits, cache, mask, positions = self._forward_batch(suffixes, prefix, reuse)
        logits = logits[:, -1]
        next_position = positions[:, -1:] + 1

        eos = _eos_ids(self.model, self.tokenizer)
        generated: list[list[int]] = [[] for _ in range(n)]
        texts = [""] * n
        active = list(range(n))  # original rows still generating, in cache order
        for _ in range(max_new_tokens):
            tokens = logits.argmax(-1)
            still: list[int] = []
            for slot, row in enumerate(active):
                token = int(tokens[slot])
                if token in eos:
                    continue
                generated[row].append(token)
                text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                texts[row], stopped = cut_at_stop(text, stop)
                if not stopped:
                    still.append(slot)
            if not still:
                break
            if len(still) < len(active):
                keep = torch.tensor(still, device=device)
                cache.batch_select_indices(keep)
                mask, next_position, tokens = mask[keep], next_position[keep], tokens[keep]
                active = [active[slot] for slot in still]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long, device=device)], 1)
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position,
                             past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
            next_position = next_position + 1
        return texts


def _common_length(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def _has_sliding_window(model: Any) -> bool:
    """Sliding-window layers drop old keys, so a cached long prefix would not be reusable as is."""
    config = getattr(model.config, "text_config", None) or model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return any("sliding" in str(kind) for kind in layer_types)
    return bool(getattr(config, "sliding_window", None)) and bool(getattr(config, "use_sliding_window", True))
