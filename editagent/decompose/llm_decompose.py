"""Decomposition by a language model: a question as its start entity and a chain of relation phrases.

A short few-shot prompt asks for one line, ``entity | relation | relation ...``, innermost relation first; the
line is parsed strictly (``parse_chain``): an entity the question does not name, an empty or over-long part, or
more relations than hops allowed, and the reading is refused, so a weak model's guess never becomes a walk. The
relation phrases are then linked like cue words (``EditAgent(decomposer="llm" | "auto")``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from editagent.decompose.direct import as_data
from editagent.llm.base import LLM
from editagent.names import normalise_name
from editagent.schema import MAX_RELATION_CHARS

PROMPT = """Split each question into the entity it starts from and the chain of relations to follow, first one first.
Question: Where does Alice's manager live?
Chain: Alice | manager | home city
Question: What is the capital of the country where the Eiffel Tower is?
Chain: Eiffel Tower | country | capital
Question: Who runs the company that makes the iPhone?
Chain: iPhone | manufacturer | chief executive officer
Question: Which language does the wife of Tom Hanks speak?
Chain: Tom Hanks | spouse | language spoken
Question: Who is Jane's dentist?
Chain: Jane | dentist
Question: In which city was the author of Dune born?
Chain: Dune | author | place of birth
"""
STOP = ("\n",)
MAX_NEW_TOKENS = 40
_SEPARATOR = re.compile(r"\s*\|\s*")


@dataclass(frozen=True)
class LLMChain:
    """A model's reading of a question: the entity as the question names it, and the relation phrases in order."""

    entity: str
    relations: tuple[str, ...]
    span: tuple[int, int]


def parse_chain(question: str, output: str, max_hops: int) -> LLMChain | None:
    """The chain in a model's output line, or None unless it is well formed (see the module doc)."""
    line = output.strip().splitlines()[0].strip() if output.strip() else ""
    parts = [part.strip(" .\"'") for part in _SEPARATOR.split(line)]
    if len(parts) < 2 or len(parts) > max_hops + 1 or any(not p or len(p) > MAX_RELATION_CHARS for p in parts):
        return None
    span = _find(question, parts[0])
    if span is None:
        return None
    return LLMChain(question[span[0]: span[1]], tuple(parts[1:]), span)


def _find(question: str, entity: str) -> tuple[int, int] | None:
    match = re.search(rf"(?<!\w){re.escape(entity)}(?!\w)", question, flags=re.IGNORECASE)
    if match:
        return match.start(), match.end()
    target = normalise_name(entity)
    words = list(re.finditer(r"\S+", question))
    for i in range(len(words)):
        for j in range(i, min(i + 8, len(words))):
            if normalise_name(question[words[i].start(): words[j].end()]) == target:
                return words[i].start(), words[j].end()
    return None


class LLMDecomposer:
    """Reads questions into chains with ``llm``, all questions in one batched call."""

    def __init__(self, llm: LLM, *, max_hops: int) -> None:
        self.llm = llm
        self.max_hops = max_hops

    def decompose(self, questions: Sequence[str]) -> list[LLMChain | None]:
        if not questions:
            return []
        prompts = [f"{PROMPT}Question: {as_data(q)}\nChain:" for q in questions]
        outputs = self.llm.generate(prompts, stop=list(STOP), max_new_tokens=MAX_NEW_TOKENS, prefix=PROMPT)
        return [parse_chain(q, output, self.max_hops) for q, output in zip(questions, outputs, strict=True)]
