"""Weight-editing metrics measured by greedy generation, not teacher forcing.

Teacher-forced scores (is p(target) > p(old object)?) overrate edits: a model can rank the target first
under forcing and still never say it. Here every metric reads what the model actually generates:

- reliability: the greedy continuation of the edit prompt contains the new object (``answer_matches``,
  "contains", on its first line; the new object's MQuAKE aliases count).
- generalization: the same for paraphrases: the rewrite's ``question`` and the edited hop's single-hop
  question (as "Q: ...\\nA:"), and the relation's cloze template when it words the prompt differently.
- locality: unrelated prompts (single-hop clozes of other cases' facts) give the same answer as before any
  edit: the greedy continuation's first clause (``answer_span``: first line, cut at , . ; : ! ? or a
  bracket), read from ``locality_tokens`` tokens; 1.0 means untouched. ``locality_exact`` is the stricter
  reading: all ``locality_tokens`` greedy tokens the same. On a 135M model most unrelated prompts are facts
  it does not know, continued by near ties ("a mix of classical and contemporary. He"), and any weight
  change flips some tail words: a random rank-one update of the same size flips about as many.
- portability: the edit's consequence two or more hops away: MQuAKE's multi-hop questions of a case with
  exactly one rewrite (then the new chain differs from the old only by this edit), answered with the case's
  new answer. None for cases with several rewrites, whose multi-hop answer needs all of them.
- fluency: ROME's weighted 2-/3-gram entropy (bits) of a longer generation from the edit prompt; a
  collapsed, repetitive model scores low. Not a fraction.

Also ``token_recall`` for long targets: the longest common subsequence of generated and target tokens over
the target's length (tokens reproduced in order, gaps allowed), from ``len(target)`` greedy tokens.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from editagent.editors.base import AppliedEdit, WeightEdit
from editagent.eval.mquake import MQuAKECase, RequestedRewrite, answer_matches

logger = logging.getLogger(__name__)

QUESTION_PROMPT = "Q: {}\nA:"


class MetricsConfig(BaseModel):
    """Generation lengths of the metrics (tokens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer_tokens: int = Field(12, ge=1, description="greedy tokens read for reliability/generalization/portability")
    locality_tokens: int = Field(8, ge=1, description="leading greedy tokens that must stay the same")
    fluency_tokens: int = Field(48, ge=2, description="greedy tokens behind the fluency entropy")
    batch_size: int = Field(16, ge=1, description="prompts per generate call")


class EditScores(BaseModel):
    """One edit's metrics (fractions in [0, 1] except ``fluency``) and what the model said."""

    case_id: int
    subject: str
    target: str
    reliability: float
    generalization: float
    locality: float
    locality_exact: float
    portability: float | None
    fluency: float
    said: str = Field(description="first line of the continuation of the edit prompt")


class EditingSummary(BaseModel):
    """Means over edits; ``portability`` over the edits that have a portability question."""

    method: str
    mode: str
    n_edits: int
    reliability: float
    generalization: float
    locality: float
    locality_exact: float
    portability: float | None
    n_portability: int
    fluency: float


# -- generation ------------------------------------------------------------------------------------------


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def greedy_ids(model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
               batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations as token ids (cut at end-of-sequence), left-padded batches of ``batch_size``.

    The same prompts in the same batches give the same padding, so before/after comparisons are exact.
    """
    from transformers import GenerationConfig  # noqa: PLC0415 - heavy import, needed only when generating

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                              eos_token_id=eos if eos_ids else None)
    results: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [list(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        device = _device(model)
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=config)
        for row in out[:, width:].tolist():
            cut = next((i for i, token in enumerate(row) if token in eos_ids), len(row))
            results.append(row[:cut])
    return results


def greedy_texts(model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                 batch_size: int = 16) -> list[str]:
    return [tokenizer.decode(ids, skip_special_tokens=True)
            for ids in greedy_ids(model, tokenizer, prompts, max_new_tokens, batch_size)]


def first_line(text: str) -> str:
    """The answer part of a continuation: up to the first newline (after leading blank space)."""
    return text.strip().split("\n", 1)[0]


_CLAUSE_END = re.compile(r"[,.;:!?(\[]")


def answer_span(text: str) -> str:
    """The answer a cloze continuation gives: its first line up to the first clause punctuation, so that "the
    United States of America, born in" and "the United States of America. He is" give the same answer."""
    return _CLAUSE_END.split(first_line(text), 1)[0].strip()


def n_gram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's fluency: mean over n of weight_n · entropy (bits) of the text's word n-gram distribution."""
    words = text.split()
    values = []
    for n, weight in zip(ns, weights, strict=True):
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        values.append(weight * entropy)
    return sum(values) / len(values)


def token_recall(generated: Sequence[int], target: Sequence[int]) -> float:
    """Longest common subsequence of ``generated`` and ``target`` over ``len(target)``: the fraction of target
    tokens reproduced in order (gaps allowed, so one wrong token does not zero the rest)."""
    if not target:
        raise ValueError("target: empty; token recall needs at least one target token")
    previous = [0] * (len(target) + 1)
    for token in generated:
        current = [0]
        for j, wanted in enumerate(target):
            current.append(previous[j] + 1 if token == wanted else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1] / len(target)


# -- MQuAKE probes -----------------------------------------------------------------------------------------


def load_cloze_templates(path: str | Path) -> dict[str, str]:
    """``cloze_templates.json``: relation id → "[X] ... __" cloze."""
    return dict(json.loads(Path(path).read_text()))


def cloze_to_prompt(cloze: str) -> str | None:
    """"[X] is located in __" → "{} is located in"; None unless [X] once and __ only at the end."""
    text = cloze.strip()
    if text.count("[X]") != 1 or not text.endswith("__") or "__" in text[:-2]:
        return None
    return text[:-2].rstrip().replace("[X]", "{}")


def rewrite_to_edit(rewrite: RequestedRewrite, cloze_templates: Mapping[str, str] | None = None, *,
                    prompt_from: Literal["rewrite", "cloze"] = "rewrite") -> WeightEdit:
    """An MQuAKE rewrite as a ``WeightEdit``: the rewrite's own prompt ("{} is located in the continent of"),
    or with ``prompt_from="cloze"`` the relation's cloze template (falling back to the rewrite's prompt)."""
    prompt = rewrite.prompt
    if prompt_from == "cloze":
        if cloze_templates is None:
            raise ValueError("cloze_templates: needed for prompt_from='cloze'; pass load_cloze_templates(path)")
        prompt = cloze_to_prompt(cloze_templates.get(rewrite.relation_id, "")) or prompt
    return WeightEdit(prompt=prompt, subject=rewrite.subject, target=rewrite.object_new)


def edited_hop(case: MQuAKECase, rewrite: RequestedRewrite) -> int | None:
    """Index of the hop ``rewrite`` changes in the case's chain (matched on subject and new object labels)."""
    for index, (subject, _, obj) in enumerate(case.orig.new_triples_labeled):
        if subject == rewrite.subject and obj == rewrite.object_new:
            return index
    return None


@dataclass
class EditProbe:
    """What is asked about one edit."""

    case_id: int
    edit: WeightEdit
    answers: list[str]  # the new object and its aliases
    paraphrases: list[str]  # generalization prompts
    portability: list[str]  # multi-hop questions (empty: not measured)
    portability_answers: list[str]


def probe_for(case: MQuAKECase, rewrite_index: int = 0, cloze_templates: Mapping[str, str] | None = None
              ) -> EditProbe:
    """The probe of ``case.requested_rewrite[rewrite_index]`` (see the module doc for each metric's prompts)."""
    rewrite = case.requested_rewrite[rewrite_index]
    edit = rewrite_to_edit(rewrite)
    hop = edited_hop(case, rewrite)
    answers = case.new_single_hops[hop].answers if hop is not None else [rewrite.object_new]
    paraphrases = [QUESTION_PROMPT.format(rewrite.question)] if rewrite.question else []
    if hop is not None:
        paraphrases.append(QUESTION_PROMPT.format(case.new_single_hops[hop].question))
    cloze = cloze_to_prompt((cloze_templates or {}).get(rewrite.relation_id, ""))
    if cloze and cloze != rewrite.prompt:
        paraphrases.append(cloze.replace("{}", rewrite.subject))
    portability = [QUESTION_PROMPT.format(q) for q in case.questions] if case.n_edits == 1 else []
    return EditProbe(case.case_id, edit, answers, list(dict.fromkeys(paraphrases)), portability, case.new_answers)


def locality_prompts(cases: Sequence[MQuAKECase], n: int, avoid: Sequence[str] = ()) -> list[str]:
    """``n`` single-hop clozes of the cases' first hops whose text names none of ``avoid`` (edited subjects)."""
    prompts: list[str] = []
    for case in cases:
        cloze = case.single_hops[0].cloze
        if cloze and cloze not in prompts and not any(subject in cloze for subject in avoid):
            prompts.append(cloze)
        if len(prompts) == n:
            break
    return prompts


# -- scoring -------------------------------------------------------------------------------------------------


class Scorer:
    """Scores edits on one model; the locality reference is generated once, from the model as it is now."""

    def __init__(self, model: nn.Module, tokenizer: Any, unrelated: Sequence[str],
                 config: MetricsConfig | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config or MetricsConfig()
        self.unrelated = list(unrelated)
        self.reference = self._locality_ids()

    def _locality_ids(self) -> list[list[int]]:
        ids = greedy_ids(self.model, self.tokenizer, self.unrelated, self.config.locality_tokens,
                         self.config.batch_size)
        return [row[: self.config.locality_tokens] for row in ids]

    def _answer(self, ids: list[int]) -> str:
        return answer_span(self.tokenizer.decode(ids, skip_special_tokens=True))

    def localities(self) -> tuple[float, float]:
        """(same answer, same tokens): fractions of unrelated prompts as before (1.0 with no prompts)."""
        if not self.unrelated:
            return 1.0, 1.0
        now = self._locality_ids()
        answers = [self._answer(a) == self._answer(b) for a, b in zip(now, self.reference, strict=True)]
        exact = [a == b for a, b in zip(now, self.reference, strict=True)]
        return sum(answers) / len(answers), sum(exact) / len(exact)

    def locality(self) -> float:
        """Fraction of unrelated prompts whose answer (``answer_span``) is as before."""
        return self.localities()[0]

    def score(self, probe: EditProbe) -> EditScores:
        """All metrics of one edit on the model as it is now."""
        cfg = self.config
        long_text = greedy_texts(self.model, self.tokenizer, [probe.edit.text], cfg.fluency_tokens)[0]
        said = first_line(long_text)
        short = greedy_texts(self.model, self.tokenizer, probe.paraphrases + probe.portability, cfg.answer_tokens,
                             cfg.batch_size)
        hits = [answer_matches(first_line(t), probe.answers, "contains") for t in short[: len(probe.paraphrases)]]
        ported = [answer_matches(first_line(t), probe.portability_answers, "contains")
                  for t in short[len(probe.paraphrases):]]
        locality, locality_exact = self.localities()
        return EditScores(
            case_id=probe.case_id, subject=probe.edit.subject, target=probe.edit.target.strip(),
            reliability=float(answer_matches(said, probe.answers, "contains")),
            generalization=sum(hits) / len(hits) if hits else 0.0,
            locality=locality, locality_exact=locality_exact,
            portability=sum(ported) / len(ported) if ported else None,
            fluency=n_gram_entropy(long_text), said=said[:200])


def evaluate(scorer: Scorer, probes: Sequence[EditProbe], apply: Callable[[list[WeightEdit]], AppliedEdit] | None,
             *, mode: Literal["single", "batch"] = "single", progress: bool = True,
             on_score: Callable[[EditScores], None] | None = None) -> list[EditScores]:
    """Scores of ``probes`` with their edits applied by ``apply`` (None: the unedited model).

    ``single``: each edit applied alone, scored, then undone. ``batch``: all edits applied in one call, each
    scored with all in place, then undone together. ``on_score`` sees each result (for checkpoints).
    """
    results: list[EditScores] = []
    batch_handle = apply([p.edit for p in probes]) if apply is not None and mode == "batch" else None
    try:
        for probe in tqdm(probes, desc=f"scoring ({mode})", disable=not progress, unit="edit"):
            handle = apply([probe.edit]) if apply is not None and mode == "single" else None
            try:
                result = scorer.score(probe)
            finally:
                if handle is not None:
                    handle.undo()
            results.append(result)
            if on_score is not None:
                on_score(result)
    finally:
        if batch_handle is not None:
            batch_handle.undo()
    return results


def retention(scorer: Scorer, probes: Sequence[EditProbe]) -> dict[str, float]:
    """Reliability and generalization of ``probes`` on the model as it is now (the greedy answer's first line,
    from ``answer_tokens`` tokens, contains the new object; generalization averaged per edit over its paraphrases),
    and the locality of the scorer's unrelated prompts."""
    cfg = scorer.config
    questions = [(i, question) for i, probe in enumerate(probes) for question in probe.paraphrases]
    texts = greedy_texts(scorer.model, scorer.tokenizer, [p.edit.text for p in probes] + [q for _, q in questions],
                         cfg.answer_tokens, cfg.batch_size)
    said, answers = texts[: len(probes)], texts[len(probes):]
    hits: dict[int, list[bool]] = {}
    for (i, _), text in zip(questions, answers, strict=True):
        hits.setdefault(i, []).append(answer_matches(first_line(text), probes[i].answers, "contains"))
    locality, locality_exact = scorer.localities()
    return {"reliability": sum(answer_matches(first_line(text), probe.answers, "contains")
                               for text, probe in zip(said, probes, strict=True)) / len(probes),
            "generalization": sum(sum(h) / len(h) for h in hits.values()) / max(1, len(hits)),
            "locality": locality, "locality_exact": locality_exact}


def summarise(method: str, mode: str, scores: Sequence[EditScores]) -> EditingSummary:
    if not scores:
        raise ValueError("scores: empty; evaluate at least one edit before summarising")
    ported = [s.portability for s in scores if s.portability is not None]

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    return EditingSummary(method=method, mode=mode, n_edits=len(scores),
                          reliability=mean([s.reliability for s in scores]),
                          generalization=mean([s.generalization for s in scores]),
                          locality=mean([s.locality for s in scores]),
                          locality_exact=mean([s.locality_exact for s in scores]),
                          portability=mean(ported) if ported else None, n_portability=len(ported),
                          fluency=mean([s.fluency for s in scores]))
