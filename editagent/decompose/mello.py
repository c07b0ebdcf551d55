"""MeLLo (Zhong et al., 2023, "MQuAKE"): answer multi-hop questions against an edit memory.

The loop, as in the paper's notebook: the model writes a subquestion and a
draft answer; the memory's top-1 edit for that subquestion is appended as
"Retrieved fact"; the model says whether it contradicts the draft and states
the intermediate answer; repeat until "Final answer". All questions advance
together, one batched ``generate`` per round, over a cached few-shot prefix.

One deliberate difference: the notebook stops after 4 generations, which
leaves a 4-hop question no turn to write its final answer; here ``max_hops``
counts retrievals and one last generation may still give the final answer.

``guided=True`` (what ``EditAgent(method="mello")`` uses) helps small models keep the format:
after a retrieved fact, the verdict line is not free text but the better-scored
of its two allowed forms, and when the verdict is "contradicts" the intermediate
answer is the retrieved edit's object. ``guided=False`` is the paper's loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files

from editagent.llm.base import LLM
from editagent.schema import DEFAULT_MAX_HOPS, Answer, Hop, SearchHit

# (subquestions, the namespace each one is asked in) -> the top-1 edit for each, or None
Retriever = Callable[[Sequence[str], Sequence[str]], list[SearchHit | None]]

STOP = ("Retrieved fact:", "\n\nQuestion:", "\nQuestion:")
NO_FACT = "No edited fact is stored."
KEEP = "Retrieved fact does not contradict to generated answer, so the intermediate answer is:"
CHANGE = "Retrieved fact contradicts to generated answer, so the intermediate answer is:"
_INTERMEDIATE = re.compile(r"^Retrieved fact (does not contradict|contradicts) to generated answer, "
                           r"so the intermediate answer is:\s*(.*)$")


def mello_prompt() -> str:
    """The few-shot prompt of the MQuAKE repository (MIT), shipped as package data."""
    return files("editagent.decompose").joinpath("prompts/MeLLo-prompt.txt").read_text(encoding="utf-8")


def quote_fact(sentence: str) -> str:
    """Edit text is data: one line, no role markers the loop could mistake for its own."""
    return " ".join(sentence.split())


@dataclass
class _Run:
    question: str
    namespace: str = "default"
    text: str = ""  # everything generated or appended after "Question: ..."
    hops: list[Hop] = field(default_factory=list)
    final: str | None = None
    failure: str | None = None
    calls: int = 0
    pending: str = ""  # text the loop wrote into the current turn before the model continues it
    hit: SearchHit | None = None


class MeLLo:
    """Batched MeLLo over any ``LLM`` and any retriever of top-1 edits."""

    method = "mello"

    def __init__(self, llm: LLM, retrieve: Retriever, *, max_hops: int = DEFAULT_MAX_HOPS, max_new_tokens: int = 96,
                 prompt: str | None = None, guided: bool = True) -> None:
        self.llm = llm
        self.guided = guided
        self.retrieve = retrieve
        self.max_hops = max_hops
        self.max_new_tokens = max_new_tokens
        self.prefix = (prompt if prompt is not None else mello_prompt()).rstrip() + "\n\n"

    def answer(self, question: str) -> Answer:
        return self.answer_many([question])[0]

    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]:
        """Answer all questions together; ``namespaces[i]`` is the memory question i retrieves from."""
        started = time.perf_counter()
        scopes = list(namespaces) if namespaces is not None else ["default"] * len(questions)
        runs = [_Run(question=q.strip(), namespace=n) for q, n in zip(questions, scopes, strict=True)]
        for _round in range(self.max_hops + 1):
            active = [run for run in runs if run.final is None and run.failure is None]
            if not active:
                break
            prompts = [f"{self.prefix}Question: {run.question}\n{run.text}" for run in active]
            outputs = self.llm.generate(prompts, stop=STOP, max_new_tokens=self.max_new_tokens, prefix=self.prefix)
            needs_fact: list[tuple[_Run, str]] = []
            for run, output in zip(active, outputs, strict=True):
                run.calls += 1
                run.text += output
                subquestion = self._read_turn(run, run.pending + output)
                run.pending = ""
                if subquestion is not None:
                    if len(run.hops) > self.max_hops:  # the new subquestion is already in hops
                        run.failure = "too many hops"
                    else:
                        needs_fact.append((run, subquestion))
            if needs_fact:
                hits = self.retrieve([subquestion for _, subquestion in needs_fact],
                                     [run.namespace for run, _ in needs_fact])
                for (run, _), hit in zip(needs_fact, hits, strict=True):
                    hop, run.hit = run.hops[-1], hit
                    if hit is not None:
                        hop.retrieved_edit_id, hop.retrieval_score = hit.id, hit.score
                        hop.retrieved_fact = quote_fact(hit.memory)
                    run.text += f"Retrieved fact: {hop.retrieved_fact or NO_FACT}\n"
                if self.guided:
                    self._choose_verdicts([run for run, _ in needs_fact])
        seconds = time.perf_counter() - started
        return [self._to_answer(run, seconds / max(len(runs), 1)) for run in runs]

    def _choose_verdicts(self, runs: list[_Run]) -> None:
        """Write each verdict line by scoring its two allowed forms instead of free generation."""
        prompts = [f"{self.prefix}Question: {run.question}\n{run.text}" for run in runs]
        pairs = [(prompt, verdict) for prompt in prompts for verdict in (KEEP, CHANGE)]
        scores = self.llm.score_many(pairs, prefix=self.prefix)
        for i, run in enumerate(runs):
            run.calls += 1
            contradicts = run.hit is not None and scores[2 * i + 1] > scores[2 * i]
            run.pending = CHANGE if contradicts else KEEP
            if contradicts and run.hit is not None:
                run.pending += f" {quote_fact(run.hit.edit.object)}\n"
            run.text += run.pending

    def _read_turn(self, run: _Run, output: str) -> str | None:
        """Parse one generation; record hops; return the new subquestion, or None when done or broken."""
        subquestion: str | None = None
        for line in (line.strip() for line in output.splitlines()):
            verdict = _INTERMEDIATE.match(line)
            if verdict and run.hops:
                run.hops[-1].contradicted = verdict.group(1) == "contradicts"
                run.hops[-1].answer = verdict.group(2).strip().rstrip(".")
                run.hops[-1].source = "edit" if run.hops[-1].contradicted else "model"
            elif line.startswith("Subquestion:"):
                subquestion = line[len("Subquestion:"):].strip()
                run.hops.append(Hop(subquestion=subquestion))
            elif line.startswith("Generated answer:") and run.hops:
                run.hops[-1].draft_answer = line[len("Generated answer:"):].strip()
            elif line.startswith("Final answer:"):
                run.final = line[len("Final answer:"):].strip().rstrip(".")
                return None
        if subquestion is None or not run.hops[-1].draft_answer:
            run.failure = "format: no subquestion and draft answer" if subquestion is None else "format: no draft"
            return None
        return subquestion

    def _to_answer(self, run: _Run, seconds: float) -> Answer:
        text = run.final
        if text is None:  # fall back to the last intermediate answer, as a reader of the trace would
            text = next((hop.answer for hop in reversed(run.hops) if hop.answer), "")
        return Answer(question=run.question, text=text, trace=run.hops, method=self.method, namespace=run.namespace,
                      raw=f"Question: {run.question}\n{run.text}", llm_calls=run.calls, seconds=seconds,
                      failure=run.failure if run.final is None else None)
