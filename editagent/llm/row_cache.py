"""Keys and values of finished generations, kept so that the next call on the same text does not recompute them.

MeLLo and PokeMQA call ``generate`` once per round, and each round's prompt is the last round's
prompt plus its output plus a line the loop appends. Without this store every round recomputes
each question's whole transcript; with it only the appended line is new. An entry is one row's
own tokens (after the shared few-shot prefix) with their per-layer keys and values; a lookup takes
the longest common *token* prefix, so a different tokenisation at the join reuses less, never
something wrong (a token's keys depend only on the tokens before it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class RowHit:
    """The first ``length`` tokens of a row are cached: per layer, keys and values [kv_heads, length, dim]."""

    length: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class RowCache:
    """Least-recently-used store of rows' keys and values, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Hashable, tuple[int, ...]], tuple[list[torch.Tensor], list[torch.Tensor]]]
        self._entries = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, context: Hashable, tokens: Sequence[int], keys: list[torch.Tensor],
            values: list[torch.Tensor]) -> None:
        """Store one row; ``context`` names what precedes its tokens (the prefix and how much of it)."""
        size = sum(t.numel() * t.element_size() for t in (*keys, *values))
        if size > self.max_bytes or not tokens:
            return
        key = (context, tuple(tokens))
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (keys, values)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def longest(self, context: Hashable, tokens: Sequence[int], limit: int) -> RowHit | None:
        """The entry sharing the longest token prefix with ``tokens`` (at most ``limit`` tokens), or None."""
        best, best_key = 0, None
        for key in self._entries:
            if key[0] != context:
                continue
            stored = key[1]
            length = 0
            for a, b in zip(stored, tokens, strict=False):
                if a != b:
                    break
                length += 1
            length = min(length, limit)
            if length > best:
                best, best_key = length, key
        if best_key is None:
            return None
        self._entries.move_to_end(best_key)
        keys, values = self._entries[best_key]
        return RowHit(best, [k[:, :best] for k in keys], [v[:, :best] for v in values])

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: tuple[Hashable, tuple[int, ...]]) -> None:
        keys, values = self._entries.pop(key)
        self._bytes -= sum(t.numel() * t.element_size() for t in (*keys, *values))
