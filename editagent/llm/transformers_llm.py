"""TransformersLLM: greedy, batched, stop-string-aware generation for any local causal LM.

Why a hand-written decoding loop rather than ``model.generate``: the MeLLo and
PokeMQA few-shot prompts are ~1,000 tokens and identical for every question.
The loop computes that prefix's KV cache once, copies it for each batch, and
feeds only each prompt's own suffix; finished rows leave the batch so the
rest run faster. Prompts are laid out as [prefix][left padding][suffix], with
the attention mask and position ids saying where the padding is. Suffixes of
very different lengths are fed in groups of similar length, each group's cache
then copied into one batch cache, so short rows are not padded to the longest.

Where the model's attention is pluggable (Llama, Qwen2, Mistral, Gemma 3, GPT-2,
GPT-NeoX and most current decoders), the prefix's keys and values are held once
for the whole batch and attended to by ``shared_prefix``'s attention function
rather than copied into every row: each decoding step then reads the prefix once,
not once per row. It also lets sliding-window models (Gemma 3) use the cached
prefix, since the window is applied by the mask. Other models (GPT-J in older transformers releases) get the
prefix copied per row, and sliding-window ones among them no prefix cache.

While decoding, the cache appends each token into room reserved up front
(``shared_prefix.reserved_layer``) instead of ``DynamicLayer``'s ``torch.cat``, which copies
the whole cache of every layer at every token: with 8 rows and a ~1,000-token
prefix on a CPU that copy, not the model, was most of a decoding step.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from editagent.llm import shared_prefix
from editagent.llm.base import cut_at_stop
from editagent.llm.row_cache import RowCache, RowHit
from editagent.models import DEFAULT_LLM, load_causal_lm, weights_version

logger = logging.getLogger(__name__)

_PREFIX_CACHE_SLOTS = 4
_MIN_ROW_REUSE = 8  # cached tokens below which a row is simply recomputed


class TransformersLLM:
    """Wraps a Hugging Face causal LM and its tokenizer; works on CPU and CUDA unchanged."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "custom", batch_size: int = 8,
                 prefix_cache: bool = True, row_cache_mb: int = 512) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.calls = 0
        # Attention over a prefix held once per batch (see shared_prefix); it also keeps sliding-window models
        # (Gemma 3) correct with a cached prefix, which the copied-prefix fallback cannot.
        self._shared = prefix_cache and shared_prefix.supports_shared_prefix(model)
        if self._shared:
            shared_prefix.install(model)
        self._prefix_cache_enabled = prefix_cache and (self._shared or not _has_sliding_window(model))
        self._prefixes: OrderedDict[str, tuple[list[int], Any]] = OrderedDict()
        self._mergeable: bool | None = None  # whether decoding caches can be assembled from parts (plain layers)
        # Finished rows' keys/values, so that a prompt extending an earlier prompt + output skips that part.
        self._rows = RowCache(row_cache_mb * 2**20 if self._shared else 0)
        self.reused_tokens = 0  # prompt tokens taken from the row cache instead of recomputed
        self._weights_version = weights_version(model)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_LLM, *, device: str | None = None, **options: Any) -> TransformersLLM:
        model, tokenizer = load_causal_lm(name_or_path, device=device)
        return cls(model, tokenizer, name=name_or_path, **options)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clear_cache(self) -> None:
        """Forget cached prefixes and rows: they were computed by the weights as they were then."""
        self._prefixes.clear()
        self._rows.clear()

    def _check_weights(self) -> None:
        """Weight editors bump the model's weights version; cached keys and values are then stale."""
        version = weights_version(self.model)
        if version != self._weights_version:
            self.clear_cache()
            self._weights_version = version

    # -- public ----------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]:
        """Greedy completions, cut before the first stop string; same order as ``prompts``."""
        if not prompts:
            return []
        self._check_weights()
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
        self._check_weights()
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
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True,
                         cache=shared_prefix.full_cache(),  # every position, sliding layers too
                         **self._last_logits_only())  # the prefix's logits are never read
        self._prefixes[prefix] = (ids, out.cache)
        if len(self._prefixes) > _PREFIX_CACHE_SLOTS:
            self._prefixes.popitem(last=False)
        logger.debug("cached a %d-token prefix", len(ids))
        return self._prefixes[prefix]

    def _last_logits_only(self) -> dict[str, int]:
        """``logits_to_keep=1`` where the model takes it: the LM head then runs on the last position only."""
        if not hasattr(self, "_keeps_logits"):
            self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        return {"logits_to_keep": 1} if self._keeps_logits else {}

    @torch.inference_mode()
    def _forward_batch(self, suffixes: list[list[int]], prefix: str | None, reuse: int,
                       last_only: bool = False, room: int = 0) -> tuple[Any, ...]:
        """One forward pass over left-padded ``suffixes`` after the first ``reuse`` cached prefix tokens.

        Returns (logits over the suffix positions, cache, attention mask, position ids of the suffix);
        with ``last_only`` the logits may cover only the last position (all that decoding reads). ``room``:
        tokens a shared-prefix cache reserves per row for decoding.
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
        if self._shared:  # also without a prefix: sliding windows are then counted by position
            cache = shared_prefix.shared_cache(self._prefix(prefix)[1] if prefix is not None else None, reuse,
                                               width + room)
            mask = torch.cat([torch.ones((n, reuse), dtype=torch.long, device=device), suffix_mask], 1)
        elif prefix is not None:
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
        out = self._call(cache, input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         **(self._last_logits_only() if last_only else {}))
        return out.logits, out.cache, mask, positions

    def _call(self, cache: Any, **inputs: Any) -> Any:
        """The model's forward over ``cache``; a shared-prefix cache is made visible to the attention function."""
        shared = shared_prefix.is_shared(cache)
        if shared:
            shared_prefix.set_positions(cache, inputs["attention_mask"], inputs["position_ids"])
        with shared_prefix.active(cache) if shared else contextlib.nullcontext():
            return self.model(cache=cache, use_cache=True, **inputs)

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
    def _prefill(self, suffixes: list[list[int]], prefix: str | None, reuse: int,
                 room: int) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Forward ``suffixes`` and make the cache decoding appends to, with ``room`` tokens reserved per row.

        Returns (last-position logits, cache, attention mask, next position id per row). Suffixes of very
        different lengths (later MeLLo rounds) are run in groups of similar length rather than all padded to the
        longest, then laid out in one cache as [prefix][padding][suffix]; padding keys are zeros and masked.
        """
        groups = _length_groups([len(s) for s in suffixes])
        if len(groups) == 1 or not self._mergeable or min(len(s) for s in suffixes) == 0:
            logits, cache, mask, positions = self._forward_batch(suffixes, prefix, reuse, last_only=True, room=room)
            if self._mergeable is None:
                self._mergeable = _plain_layers(cache)
            _reserve(cache, room)
            return logits[:, -1], cache, mask, positions[:, -1:] + 1
        n, device = len(suffixes), self.device
        width = max(len(s) for s in suffixes)
        total = reuse + width
        parts = [(torch.tensor(group, device=device), self._forward_batch([suffixes[i] for i in group], prefix, reuse,
                                                                          last_only=True)) for group in groups]
        cache = parts[0][1][1]
        for index, layer in enumerate(cache.layers):
            shared = _is_shared_layer(layer)
            head = 0 if shared else reuse  # a shared layer holds only the rows' own tokens
            end = head + width
            shape = (n, *layer.keys.shape[1:-2], end + room, layer.keys.shape[-1])
            keys, values = layer.keys.new_zeros(shape), layer.values.new_zeros(shape)
            for rows, (_, part, _, _) in parts:
                done = part.layers[index]
                own = done.keys.shape[-2] - head
                keys[rows, ..., :head, :] = done.keys[..., :head, :]
                values[rows, ..., :head, :] = done.values[..., :head, :]
                keys[rows, ..., end - own: end, :] = done.keys[..., head:, :]
                values[rows, ..., end - own: end, :] = done.values[..., head:, :]
            if shared:
                cache.layers[index] = type(layer)(layer.prefix_keys, layer.prefix_values, keys, values, end, room)
            else:
                cache.layers[index] = shared_prefix.reserved_layer().from_buffers(keys, values, end)
        logits = torch.empty((n, parts[0][1][0].shape[-1]), dtype=parts[0][1][0].dtype, device=device)
        mask = torch.zeros((n, total), dtype=torch.long, device=device)
        mask[:, :reuse] = 1
        for rows, (part_logits, _, _, _) in parts:
            logits[rows] = part_logits[:, -1]
        for row, suffix in enumerate(suffixes):
            mask[row, total - len(suffix):] = 1
        next_position = torch.tensor([[reuse + len(s)] for s in suffixes], dtype=torch.long, device=device)
        return logits, cache, mask, next_position

    @torch.inference_mode()
    def _generate_batch(self, suffixes: list[list[int]], prefix: str | None, reuse: int, stop: Sequence[str],
                        max_new_tokens: int) -> list[str]:
        """Greedy decoding of ``suffixes``, each continuing the first ``reuse`` tokens of ``prefix``."""
        n, device = len(suffixes), self.device
        context = (prefix, reuse)
        hits = [self._rows.longest(context, s, len(s) - 1) for s in suffixes] if self._rows.max_bytes else []
        if any(hit is not None and hit.length >= _MIN_ROW_REUSE for hit in hits):
            logits, cache, mask, next_position = self._prefill_from_rows(suffixes, hits, prefix, reuse,
                                                                         max_new_tokens)
        else:
            logits, cache, mask, next_position = self._prefill(suffixes, prefix, reuse, max_new_tokens)

        eos = _eos_ids(self.model, self.tokenizer)
        generated: list[list[int]] = [[] for _ in range(n)]
        fed = [0] * n  # generated tokens already in the cache, per row
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
            if len(still) < len(active):
                kept = set(still)
                self._keep_rows(context, cache, mask, reuse, [(slot, row) for slot, row in enumerate(active)
                                                              if slot not in kept], suffixes, generated, fed)
            if not still:
                break
            if len(still) < len(active):
                keep = torch.tensor(still, device=device)
                cache.batch_select_indices(keep)
                mask, next_position, tokens = mask[keep], next_position[keep], tokens[keep]
                active = [active[slot] for slot in still]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long, device=device)], 1)
            out = self._call(cache, input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position)
            cache, logits = out.cache, out.logits[:, -1]
            next_position = next_position + 1
            for row in active:
                fed[row] += 1
        else:
            self._keep_rows(context, cache, mask, reuse, list(enumerate(active)), suffixes, generated, fed)
        return texts

    @torch.inference_mode()
    def _prefill_from_rows(self, suffixes: list[list[int]], hits: list[RowHit | None], prefix: str | None,
                           reuse: int, room: int) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """``_prefill`` where some rows' leading tokens are already cached: only the rest is fed.

        Layout per row: [prefix][padding][cached tokens][padding][new tokens]; the mask says which slots are
        padding, and positions follow the mask, so padding in the middle changes nothing a row attends to.
        """
        n, device = len(suffixes), self.device
        cached = [hit.length if hit is not None and hit.length >= _MIN_ROW_REUSE else 0 for hit in hits]
        self.reused_tokens += sum(cached)
        new = [s[c:] for s, c in zip(suffixes, cached, strict=True)]
        width_cached, width_new = max(cached), max(len(x) for x in new)
        reference = next(hit for hit, c in zip(hits, cached, strict=True) if c and hit is not None)
        keys, values = [], []
        for layer, sample in enumerate(reference.keys):
            shape = (n, sample.shape[0], width_cached + width_new + room, sample.shape[-1])
            keys.append(sample.new_zeros(shape))
            values.append(sample.new_zeros(shape))
            for row, (hit, length) in enumerate(zip(hits, cached, strict=True)):
                if length and hit is not None:
                    keys[layer][row, :, width_cached - length: width_cached] = hit.keys[layer][:, :length]
                    values[layer][row, :, width_cached - length: width_cached] = hit.values[layer][:, :length]
        prefix_kv = self._prefix(prefix)[1] if prefix is not None else None
        cache = shared_prefix.prefilled_cache(prefix_kv, reuse, keys, values, width_cached, room)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((n, width_new), pad, dtype=torch.long, device=device)
        mask = torch.zeros((n, reuse + width_cached + width_new), dtype=torch.long, device=device)
        mask[:, :reuse] = 1
        for row, (ids, length) in enumerate(zip(new, cached, strict=True)):
            mask[row, reuse + width_cached - length: reuse + width_cached] = 1
            if ids:
                input_ids[row, width_new - len(ids):] = torch.tensor(ids, device=device)
                mask[row, mask.shape[1] - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width_new:]
        out = self._call(cache, input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         **self._last_logits_only())
        return out.logits[:, -1], out.cache, mask, positions[:, -1:] + 1

    def _keep_rows(self, context: tuple[str | None, int], cache: Any, mask: torch.Tensor, reuse: int,
                   slots: list[tuple[int, int]], suffixes: list[list[int]], generated: list[list[int]],
                   fed: list[int]) -> None:
        """Store finished rows' own keys and values (cache slot, original row) for a later call to continue."""
        if not self._rows.max_bytes or not shared_prefix.is_shared(cache):
            return
        for slot, row in slots:
            tokens = suffixes[row] + generated[row][: fed[row]]
            where = mask[slot, reuse:].nonzero().squeeze(-1)
            if len(where) != len(tokens):  # cannot happen; never store something that does not line up
                logger.debug("row cache: %d slots for %d tokens; not stored", len(where), len(tokens))
                continue
            self._rows.put(context, tokens, [layer.keys[slot][:, where] for layer in cache.layers],
                           [layer.values[slot][:, where] for layer in cache.layers])


def _is_plain(layer: Any) -> bool:
    """A plain ``DynamicLayer`` with [batch, heads, length, dim] tensors (not a sliding-window or other subclass)."""
    plain = shared_prefix.reserved_layer().__mro__[1]  # DynamicLayer itself
    return type(layer) is plain and layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4


def _is_shared_layer(layer: Any) -> bool:
    return isinstance(layer, shared_prefix.shared_layer())


def _plain_layers(cache: Any) -> bool:
    """Whether decoding caches can be assembled from parts: plain or shared-prefix layers of 4-d tensors."""
    layers = getattr(cache, "layers", None)
    return isinstance(layers, list) and bool(layers) and all(_is_plain(layer) or _is_shared_layer(layer)
                                                             for layer in layers)


def _reserve(cache: Any, room: int) -> None:
    """Give each plain ``DynamicLayer`` of ``cache`` room for ``room`` more tokens (others are left as they are)."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        return
    reserved = shared_prefix.reserved_layer()
    for index, layer in enumerate(layers):
        if _is_plain(layer):
            layers[index] = reserved(layer, room)


def _length_groups(lengths: list[int], slack: float = 1.25, spare: int = 32) -> list[list[int]]:
    """Rows grouped by length so that padding each group to its longest row wastes little compute.

    A row joins the current group (rows in ascending length) while the padded size stays within ``slack``
    times the real tokens plus ``spare``; each further group costs one more forward pass.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for row in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if current and lengths[row] * (len(current) + 1) > slack * (real + lengths[row]) + spare:
            groups.append(current)
            current, real = [], 0
        current.append(row)
        real += lengths[row]
    groups.append(current)
    return groups


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
