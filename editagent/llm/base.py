"""The one small interface every LLM backend speaks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class LLM(Protocol):
    """Batched greedy completion with stop strings, plus scoring of candidate continuations.

    ``prefix``: text every prompt starts with (a few-shot prompt). A backend may compute
    it once and reuse it; the output must be the same as without it.
    """

    name: str

    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]: ...

    def score(self, prompt: str, continuations: Sequence[str], *, prefix: str | None = None) -> list[float]: ...

    def score_many(self, pairs: Sequence[tuple[str, str]], *, prefix: str | None = None) -> list[float]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string (excluded), and whether one was found."""
    positions = [index for index in (text.find(s) for s in stop if s) if index >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True
