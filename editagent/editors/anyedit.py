"""AnyEdit: write a long-form target (a paragraph, a code snippet) into the weights (Jiang et al., 2025).

One value vector cannot make a model reproduce 100+ tokens: MEMIT's δ at the subject's last token has to
steer every later token through attention alone. AnyEdit cuts the target into windows of
``window_tokens`` tokens and edits autoregressively: window j's key is taken at the last token *before*
it, with the prompt and windows 1..j-1 of the target in context, and its value (the top layer's output
there) is optimised so that the model continues that context with window j. When the model then
generates window 1, the context of window 2 arises by itself, and so on. All windows' (key, value) pairs
are written in ONE MEMIT least-squares update over the MEMIT layer range (``MEMIT.spread``), so windows
of one edit, and several edits, do not overwrite each other.

Differences from the paper's code: context templates wrap the prompt as in MEMIT (not sampled from the
model); values are fitted with the shared ``value.fit_values`` (no KL term: the site is not the subject,
so there is no "{} is a" row to hold); all windows of all edits go into one update.

``compute`` gives ordinary ``Deltas`` and ``apply`` an ordinary ``AppliedEdit`` (``undo()`` exact,
``save()``/``apply_deltas``); their ``edits`` list is empty because ``WeightEdit`` holds short targets only, and
``reports`` has one report per window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import field_validator
from torch import nn
from tqdm.auto import tqdm

from editagent.editors.base import EditReport, PromptedEdit, WeightWriter, fill
from editagent.editors.capture import Probe, capture
from editagent.editors.config import AnyEditConfig
from editagent.editors.editor import Editor
from editagent.editors.memit import MEMIT, normalised_keys
from editagent.editors.prompts import device_of, make_batch
from editagent.editors.value import ValueProblem, fit_values
from editagent.schema import EditError

logger = logging.getLogger(__name__)

MAX_LONG_TARGET_CHARS = 8_000


class LongEdit(PromptedEdit):
    """A prompt naming ``subject`` that should continue with a long ``target`` (newlines allowed, e.g. code).

    ``prompt`` holds the subject verbatim or a ``{}`` where it goes, as in ``WeightEdit``. ``target`` gets a
    leading space unless it starts with whitespace (a word after a prompt is spelled with one).
    """

    target: str

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise EditError("target: give non-empty text (a paragraph or code snippet)")
        text = value.rstrip()
        if len(text) > MAX_LONG_TARGET_CHARS:
            raise EditError(f"target: {len(text)} characters, at most {MAX_LONG_TARGET_CHARS}; split it into several "
                            "LongEdits with prompts that lead into each part")
        return text if text[0].isspace() else " " + text


@dataclass
class _Window:
    """One window of one edit: its tokens and, per context template, the ids before it (key at the last one)."""

    tokens: list[int]
    contexts: list[list[int]]  # per template; contexts[0] is the bare prompt's
    first: bool  # the edit's first window


def target_ids(tokenizer: Any, edit: LongEdit) -> list[int]:
    target = list(tokenizer(edit.target, add_special_tokens=False)["input_ids"])
    if not target:
        raise EditError(f"target: {edit.target[:40]!r} encodes to no tokens; give non-empty text")
    return target


def prompt_ids(tokenizer: Any, edit: LongEdit, template: str = "{}") -> list[int]:
    return list(tokenizer(fill(template, edit.text), add_special_tokens=True)["input_ids"])


def choose_window_starts(scores: Sequence[float], n_tokens: int, longest: int, shortest: int) -> list[int]:
    """Where the windows of an ``n_tokens`` target start: each window has ``shortest``..``longest`` tokens (the last
    one may have fewer) and ends where ``scores[start]``, the score of the key a window starting there would get,
    is highest; ``scores`` has one entry per target position (entry 0, the prompt's last token, is never chosen)."""
    starts = [0]
    while n_tokens - starts[-1] > longest:
        first, last = starts[-1] + max(1, shortest), starts[-1] + longest
        starts.append(max(range(first, last + 1), key=lambda start: (scores[start], start)))
    return starts


def windows_of(tokenizer: Any, edit: LongEdit, templates: Sequence[str], starts: Sequence[int]) -> list[_Window]:
    """The target cut into windows at ``starts``, each with its contexts (prompt + earlier windows)."""
    target = target_ids(tokenizer, edit)
    prompts = [prompt_ids(tokenizer, edit, template) for template in templates]
    ends = [*starts[1:], len(target)]
    return [_Window(target[start:end], [prompt + target[:start] for prompt in prompts], start == 0)
            for start, end in zip(starts, ends, strict=True)]


def _full_row(tokenizer: Any, edit: LongEdit, templates: Sequence[str], starts: Sequence[int]
              ) -> tuple[list[int], set[int]]:
    """The bare prompt + target (but its last token) as one row, and the positions of its window sites."""
    windows = windows_of(tokenizer, edit, templates[:1], starts)
    prompt = windows[0].contexts[0]
    target = [token for window in windows for token in window.tokens]
    return prompt + target[:-1], {len(window.contexts[0]) - 1 for window in windows}


def row_capture(model: nn.Module, ids: list[int], positions: Sequence[int], probe: Probe) -> torch.Tensor:
    """``probe``'s input or output at ``positions`` of the one row ``ids``, [positions, dim] in float64."""
    inputs = {"input_ids": torch.tensor([ids], device=device_of(model))}
    return capture(model, inputs, [probe], lambda tensor: tensor[0, list(positions)])[0].double()


class AnyEdit(Editor):
    """Long-form editing: ``AnyEdit(model, tokenizer).compute(LongEdit(...))`` gives the ``Deltas``, ``.apply``
    writes them and returns an ``AppliedEdit`` (see ``Editor``). The key statistics are MEMIT's, cached alike."""

    method = "anyedit"
    config_type = AnyEditConfig
    request_type = LongEdit
    config: AnyEditConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: AnyEditConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.memit = MEMIT(model, tokenizer, self.config, **options)
        if any(self.arch.mlp_output_norm(layer) is not None for layer in self.layers):
            logger.warning("AnyEdit on a model that normalises its MLP output (%s) is not yet effective: its long "
                           "targets come out no better than unedited (docs/decisions.md)", self.arch.model_type)

    @property
    def layers(self) -> list[int]:
        return self.memit.layers

    @property
    def fingerprint(self) -> str:
        return self.memit.fingerprint

    def load_statistics(self) -> None:
        self.memit.second_moments()

    def _write(self, items: list[LongEdit], writer: WeightWriter) -> list[EditReport]:
        """Every window of every edit, written in one update."""
        start = time.perf_counter()
        starts = [self.window_starts(edit) for edit in items]
        windows = [(edit, window) for edit, at in zip(items, starts, strict=True)
                   for window in windows_of(self.tokenizer, edit, self.templates, at)]
        top = self.memit.top
        goals, reports = [], []
        earlier: list[tuple[_Window, torch.Tensor]] = []  # this edit's windows so far and their δ
        for edit, window in tqdm(windows, desc="AnyEdit window values", disable=not self.progress, unit="window"):
            if window.first:
                earlier = []
            goal, delta, report = self._fit(edit, window, earlier)
            earlier.append((window, delta))
            goals.append(goal)
            reports.append(report)
        n_templates = len(self.templates)
        key_rows = [(context, len(context) - 1) for _, window in windows for context in window.contexts]
        key_batch = make_batch(self.tokenizer, key_rows, goals[0].device)
        # Whole rows (bare prompt + target): window sites, and every other position, whose top-layer output the fit
        # assumed unchanged; holding those where they are keeps the update from disturbing the window tokens.
        full = [_full_row(self.tokenizer, edit, self.templates, at) for edit, at in zip(items, starts, strict=True)]
        sites = [(ids, [p for p in range(len(ids)) if p in wanted]) for ids, wanted in full]
        held = [(ids, [p for p in range(len(ids)) if p not in wanted]) for ids, wanted in full] \
            if self.config.hold_other_positions else []

        def keys_at(layer: int) -> torch.Tensor:
            module = self.arch.mlp_out(layer)
            keys = capture(self.model, key_batch.inputs(), [Probe(module, "input")], key_batch.at_subject)[0].double()
            keys = keys.view(len(windows), n_templates, -1).mean(dim=1)
            return torch.cat([keys, *(row_capture(self.model, ids, at, Probe(module, "input")) for ids, at in held)])

        def current() -> torch.Tensor:
            return torch.cat([row_capture(self.model, ids, at, Probe(top)) for ids, at in [*sites, *held]])

        def measure(layer: int) -> tuple[torch.Tensor, torch.Tensor]:
            return keys_at(layer), current()

        def held_now() -> list[torch.Tensor]:
            return [row_capture(self.model, ids, at, Probe(top)) for ids, at in held]

        # As in MEMIT: on the written model, windows the model no longer continues (by the stop test) get their
        # value found again, with the earlier windows now coming from the weights; every other window site and
        # held position aims at where it is now.
        def goals_again() -> tuple[torch.Tensor, int]:
            again = [self._fit(edit, window, []) for edit, window in
                     tqdm(windows, desc="AnyEdit refit", disable=not self.progress, unit="window")]
            goals_now = torch.cat([torch.stack([goal for goal, _, _ in again]).double(), *held_now()])
            return goals_now, sum(report.steps > 0 for _, _, report in again)

        targets = torch.cat([torch.stack(goals).double(), *held_now()])
        self.memit.spread(targets, writer, measure)
        self.memit.refit(writer, goals_again, measure, unit="window")
        logger.info("AnyEdit: %d edits, %d windows into layers %s in %.1f s", len(items), len(windows), self.layers,
                    time.perf_counter() - start)
        return reports

    def window_starts(self, edit: LongEdit) -> list[int]:
        """Where ``edit``'s windows start (``choose_window_starts``), scoring each possible key by how distinctive it
        is to the layers written: kᵀC⁻¹k / key_dim, averaged over the layer range. A common token's key (" the",
        ",") lies where C is large, so the damped write moves its output little and shares the change with every
        other " the": a window keyed there is where long targets derail (docs/decisions.md)."""
        target = target_ids(self.tokenizer, edit)
        size, slack = self.config.window_tokens, self.config.window_slack
        if slack == 0 or len(target) <= size:
            return list(range(0, len(target), size))
        prompt = prompt_ids(self.tokenizer, edit)
        ids, positions = prompt + target[:-1], [len(prompt) - 1 + start for start in range(len(target))]
        scores = torch.zeros(len(positions), dtype=torch.float64)
        for layer, moment in self.memit.second_moments().items():
            keys = normalised_keys(self.arch, layer, row_capture(self.model, ids, positions,
                                                                 Probe(self.arch.mlp_out(layer), "input")))
            ridge = 1e-6 * moment.diagonal().mean() * torch.eye(len(moment), dtype=moment.dtype, device=moment.device)
            solved = torch.linalg.solve(moment + ridge, keys.T.to(moment)).T
            scores += ((solved * keys.to(moment)).sum(dim=1) / keys.shape[1]).cpu() / len(self.layers)
        return choose_window_starts(scores.tolist(), len(target), size, size - slack)

    def _fit(self, edit: LongEdit, window: _Window, earlier: Sequence[tuple[_Window, torch.Tensor]]
             ) -> tuple[torch.Tensor, torch.Tensor, EditReport]:
        """The top layer's output wanted at the window's key: prompt + earlier windows → this window, with the
        earlier windows' δ already added at their keys (autoregressive: that is what the model will see)."""
        rows = [(context + window.tokens[:-1], len(context) - 1, len(window.tokens)) for context in window.contexts]
        prefix_deltas = [(row, len(before.contexts[row]) - 1, delta) for before, delta in earlier
                         for row in range(len(window.contexts))]
        text = self.tokenizer.decode(window.tokens)
        problem = ValueProblem(rows, window.tokens, len(rows), edit.subject, text, prefix_deltas)
        width = self.arch.value_dim(self.layers[-1])
        fit = fit_values(self.model, self.tokenizer, [problem], self.memit.value_site, width, self.config)[0]
        key = len(window.contexts[0]) - 1
        bare = make_batch(self.tokenizer, [(window.contexts[0], key)], fit.delta.device)
        added = [(0, len(before.contexts[0]) - 1, delta) for before, delta in earlier] + [(0, key, fit.delta)]
        return self.memit.goals_with(bare, added)[0], fit.delta, fit.report
