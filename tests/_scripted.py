"""A scripted stand-in for an LLM, for tests of the loops' bookkeeping and of the interfaces around them.

A fake on purpose: these tests need exact, hostile model outputs (a reply that ends the loop early, a planted
"Final answer:"), which no real model can be made to produce on cue. Behaviour is tested on the real model
elsewhere (tests/test_agent.py, tests/test_pokemqa.py)."""

from __future__ import annotations

from collections.abc import Sequence

from editagent.decompose.mello import CHANGE


class ScriptedLLM:
    """Not a model: returns queued replies in order and fixed verdict scores, and records every prompt."""

    name = "scripted"

    def __init__(self, replies: Sequence[str] = (), change_score: float = 0.0) -> None:
        self.replies = list(replies)
        self.change_score = change_score  # > 0: the "contradicts" verdict wins
        self.prompts: list[str] = []

    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]:
        self.prompts.extend(prompts)
        return [self.replies.pop(0) if self.replies else "Final answer: scripted." for _ in prompts]

    def score(self, prompt: str, continuations: Sequence[str], *, prefix: str | None = None) -> list[float]:
        return [0.0 for _ in continuations]

    def score_many(self, pairs: Sequence[tuple[str, str]], *, prefix: str | None = None) -> list[float]:
        return [self.change_score if verdict == CHANGE else 0.0 for _, verdict in pairs]
