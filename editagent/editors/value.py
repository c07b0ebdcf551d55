"""The value optimisation ROME, MEMIT and AnyEdit share: the vector δ an edit writes.

A vector δ added to one module's output at one token (the *site*: the subject's last token for ROME and
MEMIT, the last token before a target window for AnyEdit) is optimised so that the model continues each
row with the target tokens; a KL term on optional extra rows keeps the model's other predictions there.
Only δ takes gradients (weights are frozen); tokens before the site never change while δ is optimised,
so they are run once into a KV cache and every step runs only the rest (``SplitRows``, ``_SuffixRunner``);
the blocks below the site run once, later steps replay their outputs; logits are computed only where the loss
reads them; the loop stops as soon as greedy decoding gives the target by ``stop_margin``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from editagent.editors.arch import ModelArch
from editagent.editors.base import EditReport, WeightEdit, fill, frozen
from editagent.editors.capture import PositionDeltas, adder, hidden
from editagent.editors.config import ValueConfig
from editagent.editors.prompts import KL_TEMPLATE, Rows, SplitRows, device_of, keeps_logits, subject_row
from editagent.schema import EditError

logger = logging.getLogger(__name__)


@dataclass
class ValueFit:
    """δ, and ``init``: the edited site's original output at the subject's last token, in the rewrite row whose
    output has the median norm (see ``_Fitting.start``)."""

    delta: torch.Tensor
    init: torch.Tensor
    report: EditReport


@dataclass
class ValueProblem:
    """One δ to find: the first ``n_rewrite`` of ``rows`` must predict ``target`` as their last ``len(target)``
    predictions, the rest (if any) are KL rows whose last prediction should stay as it was; the rewrite rows' site
    outputs give the fit's ``init``. ``subject`` and ``target_text`` only label the report. ``prefix_deltas``: (row,
    position, vector) added to the site's output before the site, e.g. values already chosen for earlier windows
    (AnyEdit)."""

    rows: Rows
    target: Sequence[int]
    n_rewrite: int
    subject: str
    target_text: str
    prefix_deltas: PositionDeltas = ()


def edit_problem(tokenizer: Any, edit: WeightEdit, templates: Sequence[str]) -> ValueProblem:
    """The rows that make the model say ``edit.target`` after every templated prompt, plus ROME's KL row."""
    target = list(tokenizer(edit.target, add_special_tokens=False)["input_ids"])
    if not target:
        raise EditError(f"target: {edit.target!r} encodes to no tokens; give a non-empty word")
    rows = []
    for template in templates:  # the prompt, then the target but its last token: each target token is predicted
        ids, last = subject_row(tokenizer, fill(template, edit.template), edit.subject)
        rows.append((ids + target[:-1], last, len(target)))
    kl_ids, kl_last = subject_row(tokenizer, KL_TEMPLATE, edit.subject)
    rows.append((kl_ids, kl_last, 1))
    return ValueProblem(rows, target, len(templates), edit.subject, edit.target)


def optimise_values(model: nn.Module, tokenizer: Any, edits: Sequence[WeightEdit], site: nn.Module, width: int,
                    templates: Sequence[str], config: ValueConfig) -> list[ValueFit]:
    """For each edit, δ (``width`` wide) that, added to ``site``'s output at the subject's last token, makes the
    model say the target after every templated prompt; the edits are fitted together, each on its own δ."""
    return fit_values(model, tokenizer, [edit_problem(tokenizer, edit, templates) for edit in edits], site, width,
                      config)


def fit_values(model: nn.Module, tokenizer: Any, problems: Sequence[ValueProblem], site: nn.Module, width: int,
               config: ValueConfig) -> list[ValueFit]:
    """Find each problem's δ, added to ``site``'s output at each of its rows' site index (see ``ValueProblem``).

    All problems run in one batch, each with its own δ, loss terms and stop test, so each gets the δ it would get
    alone (up to rounding); a problem that meets its stop test leaves the batch, which is then rebuilt from the
    rest. The blocks below the site run once per batch; later steps reuse their outputs (``blocks_below``).
    """
    start = time.perf_counter()
    device = device_of(model)
    fittings = [_Fitting.new(problem, width, config, device) for problem in problems]
    below = blocks_below(model, site)
    active = list(fittings)
    with frozen(model), torch.enable_grad():
        batch = _Batch(model, tokenizer, site, active, below)
        for step in range(config.steps + 1):
            if not active:
                break
            if len(active) < len(batch.fittings):
                batch = _Batch(model, tokenizer, site, active, below)
            logits = batch.logits()
            losses, going, at = [], [], 0
            for fitting in active:
                own, at = logits[at: at + len(fitting.problem.rows)], at + len(fitting.problem.rows)
                loss = fitting.loss(own, step, config)
                if loss is None:
                    fitting.steps = step
                else:
                    losses.append(loss)
                    going.append(fitting)
            if not losses:
                break
            for fitting in going:
                fitting.theta.grad = None
            torch.stack(losses).sum().backward()
            for fitting in going:
                fitting.step(config)
            active = going
    seconds = (time.perf_counter() - start) / max(len(problems), 1)
    return [fitting.result(seconds) for fitting in fittings]


def blocks_below(model: nn.Module, site: nn.Module) -> list[nn.Module]:
    """The transformer blocks under the one that holds ``site`` (empty when the architecture is unknown): δ enters
    above them, so their outputs are the same at every step of a fit."""
    try:
        blocks = list(ModelArch(model).blocks)
    except EditError:
        return []
    for i, block in enumerate(blocks):
        if site is block or any(site is module for module in block.modules()):
            return blocks[:i]
    return []


@dataclass
class _Fitting:
    """One problem's δ while ``fit_values`` runs: δ = θ · rms(v), v the site's original output, so steps are in
    units of the output's own scale, which differs by orders of magnitude between models."""

    problem: ValueProblem
    targets: torch.Tensor
    theta: torch.Tensor
    optimiser: torch.optim.Optimizer | None
    init: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    kl_init: torch.Tensor | None = None
    prob_before: float = 0.0
    prob: float = 0.0
    steps: int = 0

    @classmethod
    def new(cls, problem: ValueProblem, width: int, config: ValueConfig, device: torch.device) -> _Fitting:
        theta = torch.zeros(width, device=device, requires_grad=True)
        optimiser = torch.optim.Adam([theta], lr=config.lr) if config.step_rule == "adam" else None
        return cls(problem, torch.tensor(list(problem.target), device=device), theta, optimiser)

    def start(self, outputs: torch.Tensor) -> None:
        """Record v, the site's original output [width] in the rewrite row of median norm, from ``outputs`` [rows,
        width]. Not simply row 0: when the bare prompt puts the subject's last token at position 0 (a one-token
        subject opening the sentence, no BOS), its output is the attention sink's, which in deeper layers is a
        hundred times larger than at any other position, and δ's steps and clamp, scaled by it, would ask every
        other row for a change far past its own size."""
        norms = outputs.detach().float().norm(dim=1)
        self.init = outputs[int(norms.argsort()[(len(norms) - 1) // 2])].detach().float().clone()
        self.scale = self.init.norm() / self.theta.numel() ** 0.5

    def delta(self) -> torch.Tensor:
        assert self.scale is not None
        return self.theta * self.scale

    def loss(self, logits: Sequence[torch.Tensor], step: int, config: ValueConfig) -> torch.Tensor | None:
        """The loss to step on, or None once the stop test is met (or the steps are spent)."""
        n_rewrite, targets = self.problem.n_rewrite, self.targets
        token_lp = torch.stack([torch.log_softmax(row.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
                                for row in logits[:n_rewrite]])  # [rows, target tokens]
        kl_lp = (torch.log_softmax(torch.cat(list(logits[n_rewrite:])).float(), dim=-1)
                 if len(logits) > n_rewrite else None)
        self.prob = float(token_lp.detach().mean(dim=1).exp().mean())
        if step == 0:
            self.kl_init, self.prob_before = (kl_lp.detach() if kl_lp is not None else None), self.prob
        if _greedy_margin(logits[:n_rewrite], targets) >= config.stop_margin or step == config.steps:
            return None
        assert self.init is not None
        loss = -token_lp.mean()
        if kl_lp is not None and self.kl_init is not None:  # summed in ROME's order: target, KL, decay
            loss = loss + config.kl_factor * F.kl_div(self.kl_init, kl_lp, log_target=True, reduction="batchmean")
        return loss + config.weight_decay * self.delta().norm() / self.init.norm()

    def step(self, config: ValueConfig) -> None:
        theta, root_width = self.theta, self.theta.numel() ** 0.5
        if self.optimiser is None:  # normalised gradient step: δ moves lr·‖v‖, i.e. θ moves lr·√width
            with torch.no_grad():
                assert theta.grad is not None
                theta.sub_(theta.grad * (config.lr * root_width / theta.grad.norm().clamp_min(1e-12)))
        else:
            self.optimiser.step()
        with torch.no_grad():  # ‖δ‖ ≤ clamp · ‖v‖, i.e. ‖θ‖ ≤ clamp · √width
            max_norm = config.clamp_norm_factor * root_width
            if theta.norm() > max_norm:
                theta.mul_(max_norm / theta.norm())

    def result(self, seconds: float) -> ValueFit:
        problem = self.problem
        logger.debug("value for %r -> %r: %d steps, p %.3f -> %.3f", problem.subject, problem.target_text[:40],
                     self.steps, self.prob_before, self.prob)
        report = EditReport(subject=problem.subject, target=problem.target_text, steps=self.steps,
                            prob_before=self.prob_before, prob_after=self.prob, seconds=seconds)
        assert self.init is not None
        return ValueFit(self.delta().detach(), self.init, report)


def _greedy_margin(rows: Sequence[torch.Tensor], targets: torch.Tensor) -> float:
    """Smallest lead of a target token's logit over the best other token, over every row and target position:
    positive exactly when greedy decoding of every row gives the whole target."""
    worst = float("inf")
    for logits in rows:
        chosen = logits.detach().float().gather(1, targets[:, None]).squeeze(1)
        others = logits.detach().float().scatter(1, targets[:, None], float("-inf")).max(dim=1).values
        worst = min(worst, float((chosen - others).min()))
    return worst


class _Batch:
    """Fittings run together: all their rows in one ``SplitRows``, and the forward hook that adds each fitting's δ
    at the site (column 0 of the suffix) of each of its rows."""

    def __init__(self, model: nn.Module, tokenizer: Any, site: nn.Module, fittings: Sequence[_Fitting],
                 below: Sequence[nn.Module]) -> None:
        device = device_of(model)
        rows: list[tuple[list[int], int, int]] = []
        prefix_deltas: list[tuple[int, int, torch.Tensor]] = []
        for fitting in fittings:
            prefix_deltas += [(len(rows) + row, position, vector)
                              for row, position, vector in fitting.problem.prefix_deltas]
            rows += list(fitting.problem.rows)
        counts = [len(fitting.problem.rows) for fitting in fittings]
        self.site, self.fittings = site, list(fittings)
        self.owner = torch.arange(len(counts), device=device).repeat_interleave(torch.tensor(counts, device=device))
        self.firsts = [sum(counts[:i]) for i in range(len(counts))]
        self.runner = _SuffixRunner(model, SplitRows.build(tokenizer, rows, device),
                                    (site, prefix_deltas) if prefix_deltas else None, below)

    def logits(self) -> list[torch.Tensor]:
        """Per row, [len(read), vocab] logits with every fitting's δ in place."""
        handle = self.site.register_forward_hook(self._add_deltas)
        try:
            return self.runner.logits()
        finally:
            handle.remove()

    def _add_deltas(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        states = hidden(output)
        for fitting, first in zip(self.fittings, self.firsts, strict=True):
            if fitting.init is None:
                fitting.start(states[first: first + fitting.problem.n_rewrite, 0])
        deltas = torch.stack([fitting.delta() for fitting in self.fittings])[self.owner]  # [rows, width]
        states = torch.cat([states[:, :1] + deltas[:, None].to(states.dtype), states[:, 1:]], dim=1)  # col 0: site
        return (states, *output[1:]) if isinstance(output, tuple) else states


class _SuffixRunner:
    """Runs a ``SplitRows`` suffix over a cached prefix, computing logits only at the columns read."""

    def __init__(self, model: nn.Module, rows: SplitRows,
                 prefix_edit: tuple[nn.Module, PositionDeltas] | None = None,
                 replay: Sequence[nn.Module] = ()) -> None:
        from transformers import DynamicCache  # noqa: PLC0415 - heavy import, needed only when editing

        self.model, self.rows = model, rows
        self.replay = list(replay)
        self._replayed: list[Any] | None = None
        self.columns = sorted({col for cols in rows.read for col in cols})
        self._slice = keeps_logits(model)
        self.cache = None
        if rows.prefix is not None:
            handle = None
            if prefix_edit is not None:  # vectors added to a module's output at prefix positions (AnyEdit)
                module, deltas = prefix_edit
                handle = module.register_forward_hook(adder(rows.prefix["attention_mask"], deltas))
            try:
                with torch.no_grad():
                    # A cache that keeps every position (no sliding-window dropping): the suffix sees the whole prefix.
                    out = model(**rows.prefix, cache=DynamicCache(), use_cache=True,
                                **({"logits_to_keep": 1} if self._slice else {}))
            finally:
                if handle is not None:
                    handle.remove()
            self.cache = out.cache

    def logits(self) -> list[torch.Tensor]:
        """Per row, [len(read), vocab] logits at its read columns."""
        extra: dict[str, Any] = {}
        if self._slice:
            extra["logits_to_keep"] = torch.tensor(self.columns, device=self.rows.suffix_ids.device)
        cache = copy.deepcopy(self.cache) if self.cache is not None else None
        with self._replaying():
            logits = self.model(input_ids=self.rows.suffix_ids, attention_mask=self.rows.attention_mask,
                                position_ids=self.rows.position_ids, cache=cache,
                                use_cache=cache is not None, **extra).logits
        where = {col: i for i, col in enumerate(self.columns)} if self._slice else {c: c for c in self.columns}
        # One gather for all rows: a per-row index would give each row's backward its own zero-filled copy of the
        # whole logits tensor.
        row_of = [row for row, cols in enumerate(self.rows.read) for _ in cols]
        picked = logits[row_of, [where[col] for cols in self.rows.read for col in cols]]
        return list(picked.split([len(cols) for cols in self.rows.read]))

    @contextlib.contextmanager
    def _replaying(self) -> Iterator[None]:
        """The blocks in ``replay`` (all below the site) compute the same suffix outputs at every step, since δ
        enters above them: the first call records them, later calls return the records instead of running them."""
        if not self.replay:
            yield
            return
        if self._replayed is None:
            records: list[Any] = [None] * len(self.replay)

            def recorder(i: int) -> Any:
                def hook(_module: nn.Module, _args: Any, output: Any) -> None:
                    records[i] = _detached(output)
                return hook

            handles = [block.register_forward_hook(recorder(i)) for i, block in enumerate(self.replay)]
            try:
                yield
            finally:
                for handle in handles:
                    handle.remove()
            self._replayed = records
            return
        own = [block.__dict__.get("forward") for block in self.replay]  # e.g. accelerate's wrapper: put back after
        for block, record in zip(self.replay, self._replayed, strict=True):
            block.forward = lambda *_args, _record=record, **_kwargs: _record  # type: ignore[method-assign]
        try:
            yield
        finally:
            for block, forward in zip(self.replay, own, strict=True):
                if forward is None:
                    del block.forward
                else:
                    block.forward = forward


def _detached(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple):
        return tuple(_detached(item) for item in output)
    return output

