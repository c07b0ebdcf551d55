"""The plain model answering a question itself, after MQuAKE's few-shot multi-hop prompt.

This is the "no edit" baseline and the router's out-of-scope path: the same prompt, so an
out-of-scope answer is exactly what the model alone would say.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib.resources import files

from editagent.decompose.mello import quote_fact
from editagent.llm.base import LLM

STOP = ("\n", "Q:")
MAX_NEW_TOKENS = 24


def multihop_prompt() -> str:
    """MQuAKE's few-shot prompt for answering a multi-hop question directly (MIT; see prompts/NOTICE.md)."""
    return files("editagent.decompose").joinpath("prompts/multihop-prompts.txt").read_text(encoding="utf-8")


def as_data(text: str) -> str:
    """Text from a user or the store, made safe to sit inside a "Q: ... A:" line: one line, and no "Q:" or
    "A:" that the model could read as the prompt's own markers (a planted answer)."""
    return re.sub(r"\b([QA]):", r"\1 -", quote_fact(text))


def answer_directly(llm: LLM, questions: Sequence[str]) -> list[tuple[str, str]]:
    """(answer, raw output) per question, in one batched call over the cached few-shot prefix."""
    if not questions:
        return []
    prefix = multihop_prompt().rstrip() + "\n"
    outputs = llm.generate([f"{prefix}Q: {as_data(q)} A:" for q in questions], stop=list(STOP),
                           max_new_tokens=MAX_NEW_TOKENS, prefix=prefix)
    return [(clean_answer(output), output) for output in outputs]


def clean_answer(text: str) -> str:
    return text.strip().rstrip(".").strip()
