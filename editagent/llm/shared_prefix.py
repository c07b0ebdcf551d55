"""Attention over a few-shot prefix stored once for a whole batch (cascade attention).

Every MeLLo/PokeMQA prompt starts with the same ~1,000-token few-shot prefix. Copying
its keys and values into every row of a batch makes each decoding step read the prefix
once per row: with 24 rows that is most of the step's memory traffic on a CPU. Here
each row's cache holds only its own tokens, the prefix's keys and values are held
once (batch 1), and the attention function scores a query against both parts and
takes one softmax over the joint row, which is exactly attention over the concatenation.

It plugs into Hugging Face models through their attention interface: a model whose
class supports it (``_supports_attention_backend``) runs ``shared_prefix_attention``,
which falls back to the model's own implementation whenever no shared cache is active,
so other callers of the same model see no change. Masks come from the model's own
mask builder over the full length (prefix + row), which also makes sliding-window
layers (Gemma 3) correct: the window is applied by position, not by dropping keys.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from typing import Any

import torch

ATTENTION_NAME = "editagent_shared_prefix"
_ACTIVE: contextvars.ContextVar[Any | None] = contextvars.ContextVar("editagent_shared_cache", default=None)
_FALLBACK: dict[int, str] = {}  # id(config) -> the implementation the model had before


def supports_shared_prefix(model: Any) -> bool:
    """Whether ``model`` routes attention through the pluggable interface (most current decoder models do)."""
    pluggable = bool(getattr(type(model), "_supports_attention_backend", False))
    return pluggable and hasattr(model, "set_attn_implementation")


def install(model: Any) -> None:
    """Route ``model``'s attention through ``shared_prefix_attention`` (idempotent)."""
    from transformers import AttentionInterface  # noqa: PLC0415 - heavy import
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface  # noqa: PLC0415

    config = model.config
    current = config._attn_implementation
    if current == ATTENTION_NAME:
        return
    previous = current if current in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping else "sdpa"
    for sub in _configs(config):
        _FALLBACK[id(sub)] = previous
    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
    # Boolean (or skipped) masks over the full length, as the SDPA path builds them.
    AttentionMaskInterface.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"])
    model.set_attn_implementation(ATTENTION_NAME)


def _configs(config: Any) -> list[Any]:
    found = [config]
    for name in ("text_config", "decoder"):
        sub = getattr(config, name, None)
        if sub is not None and sub is not config:
            found.append(sub)
    return found


@contextlib.contextmanager
def active(cache: Any) -> Iterator[None]:
    """Within this block, attention reads the shared prefix of ``cache`` (a cache of ``shared_layer`` layers)."""
    token = _ACTIVE.set(cache)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def shared_prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of ``query`` over [shared prefix][this row's keys]; the model's own implementation otherwise."""
    cache = _ACTIVE.get()
    if cache is None:
        from transformers import AttentionInterface  # noqa: PLC0415 - heavy import

        fallback = _FALLBACK.get(id(module.config), "sdpa")
        return AttentionInterface()[fallback](module, query, key, value, attention_mask, scaling=scaling,
                                              dropout=dropout, **kwargs)
    layer = cache.layers[module.layer_idx]
    prefix_keys, prefix_values = layer.prefix_keys, layer.prefix_values  # [1, kv_heads, P, dim] or None
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    if scaling is None:
        scaling = dim ** -0.5
    # Query heads i*groups .. i*groups+groups-1 share key head i (what repeat_kv expands to).
    grouped = query.reshape(batch, kv_heads, groups * q_len, dim)
    length = 0 if prefix_keys is None else prefix_keys.shape[-2]
    scores = torch.matmul(grouped, key.transpose(-1, -2))
    if length:
        # Against the prefix, every row's queries form one matrix per key head, so the prefix is read once
        # (a broadcast batched matmul would copy it for every row).
        stacked = grouped.transpose(0, 1).reshape(kv_heads, batch * groups * q_len, dim)
        on_prefix = torch.matmul(stacked, prefix_keys[0].transpose(-1, -2))  # [kv_heads, rows*groups*q, P]
        scores = torch.cat([on_prefix.view(kv_heads, batch, groups * q_len, -1).transpose(0, 1), scores], dim=-1)
    scores = scores * scaling
    softcap = kwargs.get("softcap")
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(batch, kv_heads, groups, q_len, -1)
    total = scores.shape[-1]
    mask = _boolean_mask(attention_mask, q_len, total, query.device)
    window = kwargs.get("sliding_window")
    if window is not None and getattr(cache, "key_positions", None) is not None:
        mask = _window_mask(cache, int(window), length)
    if mask is not None:  # [batch or 1, 1, q, total] -> broadcast over key heads and groups
        # Usually the whole prefix is visible (no sliding window reaches into it): mask only the rows' own part.
        start = length if length and bool(mask[..., :length].all()) else 0
        scores[..., start:].masked_fill_(~mask[:, :, None, :, start:], torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores.float(), dim=-1).to(value.dtype).view(batch, kv_heads, groups * q_len, total)
    out = torch.matmul(probs[..., length:], value)
    if length:
        from_prefix = probs[..., :length].transpose(0, 1).reshape(kv_heads, batch * groups * q_len, length)
        from_prefix = torch.matmul(from_prefix, prefix_values[0]).view(kv_heads, batch, groups * q_len, dim)
        out = out + from_prefix.transpose(0, 1)
    out = out.reshape(batch, kv_heads, groups, q_len, dim).reshape(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def set_positions(cache: Any, attention_mask: torch.Tensor, query_positions: torch.Tensor) -> None:
    """Record where each row's keys and queries sit in its own sequence, for windows counted in tokens.

    The model's mask builder counts a sliding window in cache slots, so a row padded inside the window
    would see fewer real tokens than it does alone; counting by position keeps batched = single.
    ``attention_mask``: the 2-d mask over [shared prefix][rows' own slots, the ones being fed included].
    """
    length = cache.prefix_length
    positions = attention_mask.long().cumsum(-1) - 1
    cache.key_positions = positions[:, length:]
    cache.key_valid = attention_mask[:, length:].bool()
    cache.query_positions = query_positions
    cache.window_masks = {}


def _window_mask(cache: Any, window: int, length: int) -> torch.Tensor:
    """[rows, 1, q, prefix + own] boolean: causal, not padding, and within ``window`` tokens by position."""
    if window in cache.window_masks:
        return cache.window_masks[window]
    rows = cache.key_positions.shape[0]
    device = cache.key_positions.device
    keys = torch.cat([torch.arange(length, device=device).expand(rows, length), cache.key_positions], -1)
    valid = torch.cat([torch.ones((rows, length), dtype=torch.bool, device=device), cache.key_valid], -1)
    queries = cache.query_positions[:, :, None]
    mask = valid[:, None, :] & (keys[:, None, :] <= queries) & (keys[:, None, :] > queries - window)
    cache.window_masks[window] = mask[:, None]
    return cache.window_masks[window]


def _boolean_mask(mask: torch.Tensor | None, q_len: int, total: int, device: torch.device) -> torch.Tensor | None:
    """A boolean [b, 1, q, total] mask (True: attend); None attends everywhere it is causal to."""
    if mask is None:
        if q_len == 1:
            return None
        # The queries are the last q_len positions: bottom-right aligned causality.
        rows = torch.arange(q_len, device=device)[:, None] + (total - q_len)
        return (torch.arange(total, device=device)[None, :] <= rows)[None, None]
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2
    return mask[..., -total:]


@functools.cache
def reserved_layer() -> type:
    """``ReservedLayer``, defined on first use so that importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer  # noqa: PLC0415 - heavy import

    class ReservedLayer(DynamicLayer):
        """A ``DynamicLayer`` whose keys and values are views of buffers with spare room at the end.

        ``update`` writes the new tokens into that room in place (growing a buffer, by doubling, only when it
        is full) where ``DynamicLayer`` concatenates, re-allocating and copying the whole layer every token.
        The values attended to are the same; only the memory they live in differs.
        """

        def __init__(self, layer: Any, room: int) -> None:
            super().__init__()
            self.dtype, self.device, self.is_initialized = layer.keys.dtype, layer.keys.device, True
            self.length = layer.keys.shape[-2]
            self._keys = self._with_room(layer.keys, room)
            self._values = self._with_room(layer.values, room)
            self._view()

        @classmethod
        def from_buffers(cls, keys: torch.Tensor, values: torch.Tensor, length: int) -> Any:
            """A layer holding the first ``length`` positions of ``keys``/``values``; the rest is room."""
            layer = cls.__new__(cls)
            DynamicLayer.__init__(layer)
            layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
            layer.length, layer._keys, layer._values = length, keys, values
            layer._view()
            return layer

        def _with_room(self, states: torch.Tensor, room: int) -> torch.Tensor:
            buffer = states.new_empty((*states.shape[:-2], self.length + room, states.shape[-1]))
            buffer[..., : self.length, :] = states[..., : self.length, :]
            return buffer

        def _view(self) -> None:
            self.keys = self._keys[..., : self.length, :]
            self.values = self._values[..., : self.length, :]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            new = key_states.shape[-2]
            if self.length + new > self._keys.shape[-2]:
                room = max(new, self._keys.shape[-2])
                self._keys, self._values = self._with_room(self._keys, room), self._with_room(self._values, room)
            self._keys[..., self.length: self.length + new, :] = key_states
            self._values[..., self.length: self.length + new, :] = value_states
            self.length += new
            self._view()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative count of tokens to remove")
            self.length = max(0, self.length + tokens_to_remove)
            self._view()

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._view()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._keys, self._values = self._keys[indices, ...], self._values[indices, ...]
            self._view()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx)

        def reset(self) -> None:
            self.length = 0
            self._view()

    return ReservedLayer



@functools.cache
def shared_layer() -> type:
    """``SharedPrefixLayer``, defined on first use so that importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer  # noqa: PLC0415 - heavy import

    class SharedPrefixLayer(reserved_layer()):
        """One layer's cache: the prefix's keys/values once (batch 1) plus each row's own, in buffers with room.

        ``keys``/``values`` are the rows' own tokens; lengths and mask sizes count the prefix too, so the
        model builds positions and masks for the whole sequence. Appending is ``ReservedLayer``'s.
        """

        def __init__(self, prefix_keys: torch.Tensor | None, prefix_values: torch.Tensor | None,
                     keys: torch.Tensor | None, values: torch.Tensor | None, length: int, room: int = 0) -> None:
            DynamicLayer.__init__(self)
            self.prefix_keys, self.prefix_values = prefix_keys, prefix_values
            self.length, self.room = length, room
            if keys is not None and values is not None:
                self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
                self._keys, self._values = keys, values
                self._view()

        @classmethod
        def empty(cls, prefix_keys: torch.Tensor | None, prefix_values: torch.Tensor | None, room: int) -> Any:
            """A layer with no rows' tokens yet; its buffers (``room`` tokens a row) are made on the first update."""
            return cls(prefix_keys, prefix_values, None, None, 0, room)

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
            size = max(self.room, key_states.shape[-2])
            self._keys = key_states.new_zeros((*key_states.shape[:-2], size, key_states.shape[-1]))
            self._values = value_states.new_zeros((*value_states.shape[:-2], size, value_states.shape[-1]))
            self._view()

        @property
        def prefix_length(self) -> int:
            return 0 if self.prefix_keys is None else int(self.prefix_keys.shape[-2])

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            return super().update(key_states, value_states, *args, **kwargs)

        def get_seq_length(self) -> int:
            return self.prefix_length + self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.prefix_length + self.length + query_length, 0

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("a shared-prefix cache is not cropped")

    return SharedPrefixLayer


def shared_cache(prefix_cache: Any | None, reuse: int, room: int) -> Any:
    """An empty cache continuing the first ``reuse`` tokens of ``prefix_cache`` (held once, not copied per row).

    ``prefix_cache`` None: no prefix; the cache still counts sliding windows by position (see ``set_positions``).
    ``room``: tokens each row's buffers hold before they grow.
    """
    from transformers import DynamicCache  # noqa: PLC0415 - heavy import

    layer = shared_layer()
    cache = DynamicCache()
    if prefix_cache is None:
        cache.layer_class_to_replicate = functools.partial(layer.empty, None, None, room)
    else:
        cache.layers = [layer.empty(part.keys[..., :reuse, :], part.values[..., :reuse, :], room)
                        for part in prefix_cache.layers]
    cache.editagent_shared, cache.prefix_length = True, reuse if prefix_cache is not None else 0
    return cache


def prefilled_cache(prefix_cache: Any | None, reuse: int, keys: list[torch.Tensor], values: list[torch.Tensor],
                    length: int, room: int) -> Any:
    """A shared-prefix cache whose rows already hold ``length`` tokens: per layer, buffers [rows, heads, >=, dim]."""
    cache = shared_cache(prefix_cache, reuse, room)
    layer = shared_layer()
    prefixes = [(part.keys[..., :reuse, :], part.values[..., :reuse, :]) for part in prefix_cache.layers] \
        if prefix_cache is not None else [(None, None)] * len(keys)
    cache.layers = [layer(prefix_keys, prefix_values, k, v, length, room)
                    for (prefix_keys, prefix_values), k, v in zip(prefixes, keys, values, strict=True)]
    return cache


def is_shared(cache: Any) -> bool:
    return bool(getattr(cache, "editagent_shared", False))


def full_cache() -> Any:
    """A cache keeping every position of every layer (no sliding-window dropping), to compute a prefix into."""
    from transformers import DynamicCache  # noqa: PLC0415 - heavy import

    return DynamicCache()
