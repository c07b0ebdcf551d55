"""PokeMQA (Gu et al., 2023, "PokeMQA: Programmable knowledge editing for Multi-hop Question Answering").

The loop, as in the paper's script (Hengrui-Gu/PokeMQA, ``PokeMQA-turbo_n_edited.py``): the model writes a
subquestion and stops before "Generated answer:". A *scope detector* decides whether a stored edit is in scope of
that subquestion: in scope, the loop writes the edit as the generated answer; out of scope, the model answers
itself. Either way the model then names the entity the answer gives ("According to Generated answer, the entity of
Subquestion is: X") and continues with the next subquestion, until "Final answer". Unlike MeLLo, the model never
sees an out-of-scope fact and never judges a contradiction: that is the scope detector's decision.

One generation per round carries a question from just after its "Generated answer:" to its next subquestion (the
answer line, the entity line and the next "Subquestion:" or "Final answer:" line), as in the paper. All questions
advance together, one batched ``generate`` per round and prompt variant, over a cached few-shot prefix.

With ``entity_of_question`` (e.g. ``entity_lookup_from_kgprompt`` over the paper's ``MQuAKE-CF-3k-kgprompt.json``)
the prompt is the knowledge-graph variant, the question followed by "Entity of Question: <entity>".

``guided=True`` (the default) helps small models keep the format and changes nothing for a model that already
keeps it: after an in-scope edit the loop writes the entity line with the edit's object; after an out-of-scope
answer whose next line is not the entity line, the loop writes the entity line's start and the model completes
only the entity. ``guided=False`` is the paper's loop. The deliberate differences from the paper's script are
listed, with why, in docs/decisions.md.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Literal

from editagent.decompose.mello import quote_fact
from editagent.llm.base import LLM
from editagent.schema import DEFAULT_MAX_HOPS, DEFAULT_NAMESPACE, Answer, Hop
from editagent.scope.base import ScopeDetector as ScopeDetector  # re-exported: defined in editagent.scope
from editagent.scope.embedding import DEFAULT_SCOPE_THRESHOLD as DEFAULT_SCOPE_THRESHOLD
from editagent.scope.embedding import threshold_scope as threshold_scope

EntityOfQuestion = Callable[[str], str | None]
"""Question -> its "Entity of Question" string (e.g. ``"Ellie Kemper, a human."``), or None."""

SUBQUESTION = "Subquestion:"
GENERATED = "Generated answer:"
ENTITY = "According to Generated answer, the entity of Subquestion is:"
FINAL = "Final answer:"
ENTITY_OF_QUESTION = "Entity of Question:"
# The paper stops at "Generated answer:" and at a blank line; "\nQuestion:" also ends a run-on into a new example.
STOP = (GENERATED, "\n\n", "\nQuestion:")
ENTITY_STOP = ("\n",)
ENTITY_TOKENS = 32
_SENTENCE_END = re.compile(r"[.!?]$")


def pokemqa_prompt(kg: bool = False) -> str:
    """The paper's few-shot prompt (MIT), shipped unchanged as package data: with "Entity of Question" if ``kg``."""
    name = "PokeMQA-KGprompt.txt" if kg else "PokeMQA-woKGprompt.txt"
    return files("editagent.decompose").joinpath(f"prompts/{name}").read_text(encoding="utf-8")


def entity_lookup_from_kgprompt(path: str | Path) -> EntityOfQuestion:
    """Question -> "Entity of Question" string, from the paper's ``<dataset>-kgprompt.json``.

    The file is a list (index = case_id - 1) of ``{"existing": {question: bool}, "mapping": {question:
    entity}}``; questions whose entity was not resolved (``existing`` false) have no mapping and give
    None, so they get the prompt without the knowledge line, as in the paper. Questions are matched
    after stripping surrounding spaces (the loop strips them too).
    """
    with Path(path).open(encoding="utf-8") as handle:
        raw = json.load(handle)
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of per-case objects, got {type(raw).__name__}")
    table: dict[str, str] = {}
    for index, case in enumerate(raw):
        if not isinstance(case, dict) or not isinstance(case.get("mapping", {}), dict):
            raise ValueError(f"{path}: item {index} is not an object with a 'mapping' object")
        existing = case.get("existing", {})
        for question, entity in case.get("mapping", {}).items():
            if isinstance(entity, str) and entity.strip() and existing.get(question, True):
                table[question.strip()] = entity.strip()
    return lambda question: table.get(question.strip())


@dataclass
class _Run:
    question: str
    namespace: str
    head: str  # "Question: ...\n" and, with the knowledge prompt, "Entity of Question: ...\n"
    prefix: str  # the few-shot prompt this question uses, as the LLM's cached prefix
    text: str = ""  # everything generated or appended after the head
    pending: str = ""  # the loop's start of the current line, continued by the model ("Generated answer:")
    hops: list[Hop] = field(default_factory=list)
    final: str | None = None
    failure: str | None = None
    calls: int = 0

    @property
    def prompt(self) -> str:
        return f"{self.prefix}{self.head}{self.text}{self.pending}"

    @property
    def active(self) -> bool:
        return self.final is None and self.failure is None


class PokeMQA:
    """Batched PokeMQA over any ``LLM`` and any scope detector."""

    method = "pokemqa"

    def __init__(self, llm: LLM, scope: ScopeDetector, *, max_hops: int = DEFAULT_MAX_HOPS, max_new_tokens: int = 128,
                 guided: bool = True, entity_of_question: EntityOfQuestion | None = None,
                 prompt: str | None = None, kg_prompt: str | None = None) -> None:
        if max_hops < 1:
            raise ValueError(f"max_hops: {max_hops}; at least 1")
        self.llm = llm
        self.scope = scope
        self.max_hops = max_hops
        self.max_new_tokens = max_new_tokens
        self.guided = guided
        self.entity_of_question = entity_of_question
        self.prefix = (prompt if prompt is not None else pokemqa_prompt(kg=False)).rstrip() + "\n\n"
        self.kg_prefix = (kg_prompt if kg_prompt is not None else pokemqa_prompt(kg=True)).rstrip() + "\n\n"

    def answer(self, question: str, namespace: str = DEFAULT_NAMESPACE) -> Answer:
        return self.answer_many([question], [namespace])[0]

    def answer_many(self, questions: Sequence[str], namespaces: Sequence[str] | None = None) -> list[Answer]:
        """Answer all questions together; ``namespaces[i]`` is the memory question i's edits are in."""
        started = time.perf_counter()
        scopes = list(namespaces) if namespaces is not None else [DEFAULT_NAMESPACE] * len(questions)
        runs = [self._start(question, namespace) for question, namespace in zip(questions, scopes, strict=True)]
        # Each round adds a hop, or (guided) repairs a missing entity line; so 2 rounds per hop at most.
        for _round in range(2 * (self.max_hops + 1)):
            active = [run for run in runs if run.active]
            if not active:
                break
            outputs = self._generate(active, STOP, self.max_new_tokens)
            steps = [self._read_turn(run, output) for run, output in zip(active, outputs, strict=True)]
            repairs = [run for run, step in zip(active, steps, strict=True) if step == "entity"]
            if repairs:
                self._complete_entities(repairs)
            asking = [run for run, step in zip(active, steps, strict=True) if step == "subquestion"]
            if asking:
                self._apply_scope(asking)
        for run in runs:
            if run.active:  # unreachable while every round makes progress; kept as a guard
                run.failure = "too many rounds"
        seconds = time.perf_counter() - started
        return [self._to_answer(run, seconds / max(len(runs), 1)) for run in runs]

    # -- steps -----------------------------------------------------------------------------------

    def _start(self, question: str, namespace: str) -> _Run:
        question = question.strip()
        entity = self.entity_of_question(question) if self.entity_of_question is not None else None
        if entity:
            head = f"Question: {question}\n{ENTITY_OF_QUESTION} {quote_fact(entity)}\n"
            return _Run(question=question, namespace=namespace, head=head, prefix=self.kg_prefix)
        return _Run(question=question, namespace=namespace, head=f"Question: {question}\n", prefix=self.prefix)

    def _generate(self, runs: list[_Run], stop: Sequence[str], max_new_tokens: int) -> list[str]:
        """One batched ``generate`` per prompt variant (each has its own cached prefix), in ``runs`` order."""
        outputs: list[str] = [""] * len(runs)
        for prefix in dict.fromkeys(run.prefix for run in runs):
            rows = [i for i, run in enumerate(runs) if run.prefix == prefix]
            texts = self.llm.generate([runs[i].prompt for i in rows], stop=stop, max_new_tokens=max_new_tokens,
                                      prefix=prefix)
            for i, text in zip(rows, texts, strict=True):
                outputs[i] = text
                runs[i].calls += 1
        return outputs

    def _read_turn(self, run: _Run, output: str) -> Literal["subquestion", "entity"] | None:
        """Parse one continuation into the trace; say what the question needs next.

        "subquestion": a new hop was asked, for the scope detector; "entity" (guided): the loop wrote
        the start of the entity line and the model must complete it; None: finished, failed, or the
        last hop is complete and the next round continues.
        """
        text = run.pending + output
        open_hop = run.hops[-1] if run.hops else None
        if self.guided and open_hop is not None and run.pending == GENERATED:
            answer_line, _, rest = text.partition("\n")
            following = next((line.strip() for line in rest.split("\n") if line.strip()), "")
            if not following.startswith(ENTITY):
                open_hop.draft_answer = answer_line[len(GENERATED):].strip()
                run.text += answer_line.rstrip() + "\n"
                run.pending = ENTITY
                return "entity"
        run.pending = ""
        kept = ""
        step: Literal["subquestion", "entity"] | None = None
        for raw in text.splitlines(keepends=True):
            line = raw.strip()
            kept += raw
            if line.startswith(FINAL):
                run.final = line[len(FINAL):].strip().rstrip(".")
                break
            if line.startswith(SUBQUESTION):
                subquestion = line[len(SUBQUESTION):].strip()
                kept = kept.rstrip() + "\n"
                if not subquestion:
                    run.failure = "format: empty subquestion"
                elif not raw.endswith("\n"):  # cut by max_new_tokens (a run-on), or at a blank line
                    run.failure = "format: subquestion line not ended"
                elif len(run.hops) >= self.max_hops:
                    run.failure = "too many hops"
                else:
                    run.hops.append(Hop(subquestion=subquestion))
                    step = "subquestion"
                break
            if open_hop is None:
                continue
            if line.startswith(GENERATED) and not open_hop.draft_answer:
                open_hop.draft_answer = line[len(GENERATED):].strip()
            elif line.startswith(ENTITY) and not open_hop.answer:
                open_hop.answer = line[len(ENTITY):].strip().rstrip(".")
        else:
            run.failure = "format: no subquestion or final answer"
        run.text += kept
        return step

    def _complete_entities(self, runs: list[_Run]) -> None:
        """Guided: the loop wrote the entity line's start; the model writes the entity, up to the line end."""
        for run, output in zip(runs, self._generate(runs, ENTITY_STOP, ENTITY_TOKENS), strict=True):
            entity = quote_fact(output)
            run.hops[-1].answer = entity.rstrip(".")
            run.text += f"{ENTITY} {entity}".rstrip() + "\n"
            run.pending = ""

    def _apply_scope(self, runs: list[_Run]) -> None:
        """Ask the scope detector about each new subquestion; write the edit, or let the model answer."""
        hits = self.scope([run.hops[-1].subquestion for run in runs], [run.namespace for run in runs])
        for run, hit in zip(runs, hits, strict=True):
            hop = run.hops[-1]
            if hit is None:
                run.pending = GENERATED
                continue
            fact = quote_fact(hit.memory)
            sentence = fact if _SENTENCE_END.search(fact) else f"{fact}."
            hop.retrieved_edit_id, hop.retrieved_fact, hop.retrieval_score = hit.id, fact, hit.score
            hop.draft_answer, hop.contradicted, hop.source = sentence, True, "edit"
            run.text += f"{GENERATED} {sentence}\n"
            if self.guided:
                hop.answer = quote_fact(hit.edit.object)
                run.text += f"{ENTITY} {hop.answer}\n"

    def _to_answer(self, run: _Run, seconds: float) -> Answer:
        text = run.final
        if text is None:  # fall back to the last entity, as a reader of the trace would
            text = next((hop.answer for hop in reversed(run.hops) if hop.answer), "")
        return Answer(question=run.question, text=text, trace=run.hops, method=self.method, namespace=run.namespace,
                      raw=f"{run.head}{run.text}{run.pending}", llm_calls=run.calls, seconds=seconds,
                      failure=run.failure if run.final is None else None)
