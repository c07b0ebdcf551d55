"""A scripted stand-in for an LLM, for tests of the loops' bookkeeping and of the interfaces around them.

A fake on purpose: these tests need exact, hostile model outputs (a reply that ends the loop early, a planted
"Final answer:"), which no real model can be made to produce on cue. Behaviour is tested on the real model
elsewhere (tests/test_agent.py, tests/test_pokemqa.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from editagent.decompose.mello import CHANGE


class ScriptedLLM:
    """Not a model: returns queued replies and fixed verdict scores, and records every call.

    ``replies``: one queue for every prompt in order, or one queue per question (read from the prompt's
    "Question: ..." line after the prefix). An empty queue answers "Final answer: scripted.".
    ``change_score`` > 0 makes MeLLo's "contradicts" verdict win.
    """

    name = "scripted"

    def __init__(self, replies: Sequence[str] | Mapping[str, Sequence[str]] = (), change_score: float = 0.0) -> None:
        self.by_question = {q: list(queue) for q, queue in replies.items()} if isinstance(replies, Mapping) else None
        self.replies = [] if isinstance(replies, Mapping) else list(replies)
        self.change_score = change_score
        self.prompts: list[str] = []
        self.calls: list[dict[str, object]] = []

    def generate(self, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 64,
                 prefix: str | None = None) -> list[str]:
        self.prompts.extend(prompts)
        self.calls.append({"prompts": list(prompts), "stop": tuple(stop), "prefix": prefix})
        return [self._reply(prompt, prefix) for prompt in prompts]

    def _reply(self, prompt: str, prefix: str | None) -> str:
        if self.by_question is None:
            return self.replies.pop(0) if self.replies else "Final answer: scripted."
        assert prefix is not None and prompt.startswith(prefix)
        question = prompt[len(prefix):].split("\n", 1)[0].removeprefix("Question: ")
        return self.by_question[question].pop(0)

    def score(self, prompt: str, continuations: Sequence[str], *, prefix: str | None = None) -> list[float]:
        return [0.0 for _ in continuations]

    def score_many(self, pairs: Sequence[tuple[str, str]], *, prefix: str | None = None) -> list[float]:
        return [self.change_score if verdict == CHANGE else 0.0 for _, verdict in pairs]
