"""The value (target vector) optimisation shared by ROME, MEMIT and AnyEdit, and the prompt plumbing it needs.

A vector δ added to one module's output at one token (the *site*: the subject's last token for ROME and
MEMIT, the last token before a target window for AnyEdit) is optimised so that the model continues each
row with the target tokens; a KL term on optional extra rows keeps the model's other predictions there.
Only δ takes gradients (weights are frozen); tokens before the site never change while δ is optimised,
so they are run once into a KV cache and every step runs only the rest (``SplitRows``, ``_SuffixRunner``);
logits are computed only where the loss reads them; the loop stops as soon as the target is reached
(``stop_margin``, or ``stop_prob``).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from editagent.editors.arch import ModelArch
from editagent.editors.base import EditReport, WeightEdit, fill, frozen
from editagent.editors.stats import DEFAULT_STATS_TOKENS, StopForward
from editagent.schema import EditError

logger = logging.getLogger(__name__)

# Fixed, neutral sentence prefixes (ROME samples its own from the model; fixed ones are deterministic and free).
CONTEXT_PREFIXES = ("The following is true.", "Here is a fact.", "I read about this today.",
                    "This is from a textbook.", "Let me tell you something.", "Remember this.", "Good question.",
                    "Listen carefully.", "Facts matter.", "As noted before.")
KL_TEMPLATE = "{} is a"


def context_templates(n: int) -> list[str]:
    """The bare prompt ``{}`` plus ``n`` prefixed versions of it."""
    return ["{}", *(f"{prefix} {{}}" for prefix in CONTEXT_PREFIXES[:n])]


class ValueConfig(BaseModel):
    """Settings of the target-value optimisation shared by ROME and MEMIT (v: the edited output at the subject).

    As in ROME, except that steps and weight decay are scale-free, because the outputs' scale differs by orders
    of magnitude between models: δ = θ·rms(v), and the decay term is ``weight_decay``·‖δ‖/‖v‖ (ROME: 0.5·‖δ‖/‖v‖²,
    which on a random test model outweighed the target loss ten-thousandfold).

    The step rule is a normalised gradient step, not ROME's Adam: Adam moves every coordinate by about lr, so
    δ fills all directions, and the ones the target does not need reach every other token through the edited
    weights. On SmolLM2-135M-Instruct, 12 counterfactual edits, ROME: Adam lr 1 → 0.5 → 0.25 gave answer
    locality 0.84 → 0.87 → 0.88; gradient steps of 0.1·‖v‖ gave 0.93, reliability 1.00 with either. MEMIT:
    locality 0.88 → 0.93, but reliability 1.00 → 0.92 (on 50 edits 0.94 → 0.86): the smaller δ leaves less slack
    for what MEMIT's λC-damped write falls short of, which MEMIT's ``refits`` win back (0.96).
    The stop test is ``stop_margin``, "greedy decoding says the whole target on every prompt, by a margin", which
    is what reliability asks (a mean probability can pass while one template's token is not greedy); margin 2
    rather than 1 keeps the paraphrases (generalization 0.58 → 0.67) and fluency (3.65 → 4.15 bits) up.
    ``clamp_norm_factor`` 10 (ROME's 4 was set for GPT-2 XL) lets multi-token targets get there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_rule: Literal["adam", "gradient"] = Field(
        "gradient", description="'gradient': each step moves δ by lr·‖v‖ along the loss gradient; 'adam': Adam, "
                                "lr per coordinate in units of rms(v) (ROME's choice)")
    lr: float = Field(0.1, gt=0, description="step length of δ in units of ‖v‖ (for 'adam': per coordinate, "
                                             "in units of rms(v))")
    steps: int = Field(60, ge=0, description="most optimisation steps; fewer once the stop criterion is met")
    stop_prob: float = Field(0.9, gt=0, le=1, description="stop once the mean target-token probability reaches it")
    stop_margin: float | None = Field(2.0, ge=0, description="stop once every target token of every prompt is the "
                                                             "greedy choice by this many logits (None: stop_prob)")
    kl_factor: float = Field(0.0625, ge=0, description="weight of KL(edited || original) on '{} is a'")
    weight_decay: float = Field(0.1, ge=0, description="weight of ‖δ‖ / ‖v‖ in the loss")
    clamp_norm_factor: float = Field(10.0, gt=0, description="‖δ‖ is clamped to this times ‖v‖")
    n_context_templates: int = Field(4, ge=0, le=len(CONTEXT_PREFIXES),
                                     description="prefixed copies of the prompt, besides the bare prompt")
    stats_tokens: int = Field(DEFAULT_STATS_TOKENS, ge=1, description="tokens behind the key statistics C")



# -- prompts -------------------------------------------------------------------------------------------


@dataclass
class PromptBatch:
    """Left-padded rows (all end at the last column) and where each row's subject ends (``make_batch``: the last
    column)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    subject_col: torch.Tensor  # [rows] column of the subject's last token

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def subject_row(tokenizer: Any, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of ``template`` filled with ``subject``, and the index of the subject's last token."""
    ids = _encode(tokenizer, fill(template, subject))
    last = len(_encode(tokenizer, template.partition("{}")[0] + subject)) - 1
    return ids, min(last, len(ids) - 1)


def make_batch(tokenizer: Any, rows: Sequence[tuple[list[int], int]], device: torch.device) -> PromptBatch:
    """``rows``: (token ids, subject's last index). Each row is cut after that index: only what is there is read,
    and in a causal model later tokens cannot change it (on MQuAKE prompts this drops about half the tokens)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = [(ids[: last + 1], last) for ids, last in rows]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    cols = []
    for i, (ids, last) in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
        cols.append(width - len(ids) + last)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return PromptBatch(input_ids.to(device), mask.to(device), positions.to(device), torch.tensor(cols, device=device))


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


Probe = tuple[nn.Module, bool]  # a module, and whether to read its input (True) or its output
PrefixDeltas = Sequence[tuple[int, int, torch.Tensor]]  # (row, position in the row's own ids, vector to add)


@torch.no_grad()
def capture_all_at_subject(model: nn.Module, batch: PromptBatch, probes: Sequence[Probe], *,
                           adding: tuple[nn.Module, PrefixDeltas] | None = None) -> list[torch.Tensor]:
    """Each probe's module input or output at each row's subject column, [rows, dim] each, from ONE forward pass
    that stops once every probe has been read; ``adding``: vectors added to a module's output first, at (row,
    position in the row's ids) as for ``_adder``."""
    caught: dict[int, torch.Tensor] = {}
    rows = torch.arange(len(batch.subject_col), device=batch.subject_col.device)

    def taker(i: int) -> Any:
        def take(tensor: torch.Tensor) -> None:
            caught[i] = tensor[rows, batch.subject_col].detach()
            if len(caught) == len(probes):
                raise StopForward
        return take

    handles = []
    if adding is not None:  # registered first, so a probe on the same module reads the sum
        handles.append(adding[0].register_forward_hook(_adder(batch.attention_mask, adding[1])))
    for i, (module, inputs) in enumerate(probes):
        take = taker(i)
        if inputs:
            handles.append(module.register_forward_pre_hook(lambda _m, args, _take=take: _take(args[0])))
        else:
            handles.append(module.register_forward_hook(lambda _m, _args, output, _take=take: _take(_hidden(output))))
    try:
        model(**batch.inputs(), use_cache=False)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return [caught[i] for i in range(len(probes))]


def capture_at_subject(model: nn.Module, batch: PromptBatch, module: nn.Module, *, inputs: bool) -> torch.Tensor:
    """``module``'s input (``inputs``) or output at each row's subject column, [rows, dim]; stops the forward there."""
    return capture_all_at_subject(model, batch, [(module, inputs)])[0]


def template_keys(model: nn.Module, tokenizer: Any, arch: ModelArch, layer: int, edits: Sequence[WeightEdit],
                  templates: Sequence[str]) -> torch.Tensor:
    """The down projection's input at the subject's last token of each edit's prompt behind each context
    template, [edits, templates, key_dim] in float64."""
    rows = [subject_row(tokenizer, fill(t, edit.template), edit.subject) for edit in edits for t in templates]
    batch = make_batch(tokenizer, rows, _device(model))
    keys = capture_at_subject(model, batch, arch.mlp_out(layer), inputs=True).double()
    return keys.view(len(edits), len(templates), -1)


# -- value optimisation --------------------------------------------------------------------------------


@dataclass
class ValueFit:
    """δ, and ``init``: the edited site's original output at the subject's last token of the bare prompt."""

    delta: torch.Tensor
    init: torch.Tensor
    report: EditReport


@dataclass
class SplitRows:
    """Rows cut at the subject's last token: the part before it never changes while δ is optimised, so it is run
    once into a KV cache; every step runs only the suffix, which starts with the subject's last token (column 0).

    The prefix is left-padded, the suffix right-padded; ``read`` says which suffix column to read for each row
    and predicted token.
    """

    prefix: dict[str, torch.Tensor] | None  # input_ids / attention_mask / position_ids; None when all are empty
    suffix_ids: torch.Tensor
    attention_mask: torch.Tensor  # over prefix + suffix
    position_ids: torch.Tensor  # of the suffix
    read: list[list[int]]  # per row: suffix columns whose logits the loss reads

    @classmethod
    def build(cls, tokenizer: Any, rows: Sequence[tuple[list[int], int, int]], device: torch.device) -> SplitRows:
        """``rows``: (token ids, subject's last index, how many trailing predictions to read)."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        heads = [ids[:last] for ids, last, _ in rows]
        tails = [ids[last:] for ids, last, _ in rows]
        width_p, width_s = max(len(h) for h in heads), max(len(t) for t in tails)
        prefix_ids = torch.full((len(rows), width_p), pad, dtype=torch.long)
        prefix_mask = torch.zeros((len(rows), width_p), dtype=torch.long)
        suffix_ids = torch.full((len(rows), width_s), pad, dtype=torch.long)
        suffix_mask = torch.zeros((len(rows), width_s), dtype=torch.long)
        read = []
        for i, (head, tail, (_, _, n_read)) in enumerate(zip(heads, tails, rows, strict=True)):
            if head:
                prefix_ids[i, width_p - len(head):] = torch.tensor(head)
                prefix_mask[i, width_p - len(head):] = 1
            suffix_ids[i, : len(tail)] = torch.tensor(tail)
            suffix_mask[i, : len(tail)] = 1
            read.append(list(range(len(tail) - n_read, len(tail))))
        lengths = prefix_mask.sum(dim=1, keepdim=True)
        prefix = None
        if width_p:
            prefix = {"input_ids": prefix_ids.to(device), "attention_mask": prefix_mask.to(device),
                      "position_ids": (prefix_mask.cumsum(-1) - 1).clamp(min=0).to(device)}
        return cls(prefix, suffix_ids.to(device), torch.cat([prefix_mask, suffix_mask], dim=1).to(device),
                   (lengths + torch.arange(width_s)).to(device), read)


def _adder(mask: torch.Tensor, deltas: PrefixDeltas) -> Any:
    """A forward hook adding each vector at its (row, position) of a left-padded batch with ``mask``."""
    pads = (mask.shape[1] - mask.sum(dim=1)).tolist()

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden = _hidden(output).clone()
        for row, position, delta in deltas:
            hidden[row, pads[row] + position] += delta.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return hook


class _SuffixRunner:
    """Runs a ``SplitRows`` suffix over a cached prefix, computing logits only at the columns read."""

    def __init__(self, model: nn.Module, rows: SplitRows, prefix_edit: tuple[nn.Module, PrefixDeltas] | None = None,
                 replay: Sequence[nn.Module] = ()) -> None:
        from transformers import DynamicCache  # noqa: PLC0415 - heavy import, needed only when editing

        self.model, self.rows = model, rows
        self.replay = list(replay)
        self._replayed: list[Any] | None = None
        self.columns = sorted({col for cols in rows.read for col in cols})
        self._slice = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.cache = None
        if rows.prefix is not None:
            handle = None
            if prefix_edit is not None:  # vectors added to a module's output at prefix positions (AnyEdit)
                module, deltas = prefix_edit
                handle = module.register_forward_hook(_adder(rows.prefix["attention_mask"], deltas))
            try:
                with torch.no_grad():
                    # A cache that keeps every position (no sliding-window dropping): the suffix sees the whole prefix.
                    out = model(**rows.prefix, past_key_values=DynamicCache(), use_cache=True,
                                **({"logits_to_keep": 1} if self._slice else {}))
            finally:
                if handle is not None:
                    handle.remove()
            self.cache = out.past_key_values

    def logits(self) -> list[torch.Tensor]:
        """Per row, [len(read), vocab] logits at its read columns."""
        extra: dict[str, Any] = {}
        if self._slice:
            extra["logits_to_keep"] = torch.tensor(self.columns, device=self.rows.suffix_ids.device)
        cache = copy.deepcopy(self.cache) if self.cache is not None else None
        with self._replaying():
            logits = self.model(input_ids=self.rows.suffix_ids, attention_mask=self.rows.attention_mask,
                                position_ids=self.rows.position_ids, past_key_values=cache,
                                use_cache=cache is not None, **extra).logits
        where = {col: i for i, col in enumerate(self.columns)} if self._slice else {c: c for c in self.columns}
        # One gather for all rows: a per-row index would give each row's backward its own zero-filled copy of the
        # whole logits tensor (12 % of a MEMIT value fit's time on SmolLM2).
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


def blocks_below(model: nn.Module, site: nn.Module) -> list[nn.Module]:
    """The transformer blocks under the one that holds ``site`` (empty when the architecture is unknown)."""
    try:
        blocks = list(ModelArch(model).blocks)
    except EditError:
        return []
    for i, block in enumerate(blocks):
        if site is block or any(site is module for module in block.modules()):
            return blocks[:i]
    return []


Rows = Sequence[tuple[list[int], int, int]]  # (token ids, site index, how many trailing predictions to read)


@dataclass
class ValueProblem:
    """One δ to find: the first ``n_rewrite`` of ``rows`` must predict ``target`` as their last ``len(target)``
    predictions, the rest (if any) are KL rows whose last prediction should stay as it was; row 0's site output is
    the fit's ``init``. ``subject`` and ``target_text`` only label the report. ``prefix_deltas``: (row, position,
    vector) added to the site's output before the site, e.g. values already chosen for earlier windows (AnyEdit)."""

    rows: Rows
    target: Sequence[int]
    n_rewrite: int
    subject: str
    target_text: str
    prefix_deltas: PrefixDeltas = ()


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


def _greedy_margin(rows: Sequence[torch.Tensor], targets: torch.Tensor) -> float:
    """Smallest lead of a target token's logit over the best other token, over every row and target position:
    positive exactly when greedy decoding of every row gives the whole target."""
    worst = float("inf")
    for logits in rows:
        chosen = logits.detach().float().gather(1, targets[:, None]).squeeze(1)
        others = logits.detach().float().scatter(1, targets[:, None], float("-inf")).max(dim=1).values
        worst = min(worst, float((chosen - others).min()))
    return worst


@dataclass
class _Fitting:
    """One problem's state while ``fit_values`` runs."""

    problem: ValueProblem
    targets: torch.Tensor
    theta: torch.Tensor  # δ = θ · scale
    optimiser: torch.optim.Optimizer | None
    init: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    kl_init: torch.Tensor | None = None
    prob_before: float = 0.0
    prob: float = 0.0
    steps: int = 0

    def delta(self) -> torch.Tensor:
        assert self.scale is not None
        return self.theta * self.scale


def _batch_rows(fittings: Sequence[_Fitting]) -> tuple[list[tuple[list[int], int, int]], PrefixDeltas, list[int]]:
    """All rows of ``fittings`` in one batch, their prefix deltas renumbered, and each fitting's row count."""
    rows: list[tuple[list[int], int, int]] = []
    deltas: list[tuple[int, int, torch.Tensor]] = []
    for fitting in fittings:
        deltas += [(len(rows) + row, position, vector) for row, position, vector in fitting.problem.prefix_deltas]
        rows += list(fitting.problem.rows)
    return rows, deltas, [len(f.problem.rows) for f in fittings]


def fit_values(model: nn.Module, tokenizer: Any, problems: Sequence[ValueProblem], site: nn.Module, width: int,
               config: ValueConfig, *, replay: bool = True) -> list[ValueFit]:
    """Find each problem's δ, added to ``site``'s output at each of its rows' site index (see ``ValueProblem``).

    All problems run in one batch, each with its own δ, loss terms and stop test, so each gets the δ it would get
    alone (up to rounding); a problem that meets its stop test leaves the batch, which is then rebuilt from the
    rest. ``replay``: the blocks below the site run once per batch, later steps reuse their outputs (on
    SmolLM2-135M, MEMIT's site is block 8 of 30); False recomputes them every step, for checking.
    """
    start = time.perf_counter()
    device = _device(model)
    fittings = []
    for problem in problems:
        theta = torch.zeros(width, device=device, requires_grad=True)
        optimiser = torch.optim.Adam([theta], lr=config.lr) if config.step_rule == "adam" else None
        fittings.append(_Fitting(problem, torch.tensor(list(problem.target), device=device), theta, optimiser))

    active = list(fittings)
    below = blocks_below(model, site) if replay else []
    state: dict[str, Any] = {}  # the batch being run: its fittings, the owner of each row, each fitting's first row

    def add_delta(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden = _hidden(output)
        for fitting, first in zip(state["fittings"], state["firsts"], strict=True):
            if fitting.init is None:
                # δ = θ · rms(v), v the original output at the site: the learning rate is then in units of the
                # output's own scale, which differs by orders of magnitude between models.
                fitting.init = hidden[first, 0].detach().float().clone()
                fitting.scale = fitting.init.norm() / width**0.5
        deltas = torch.stack([f.delta() for f in state["fittings"]])[state["owner"]]  # [rows, width]
        hidden = torch.cat([hidden[:, :1] + deltas[:, None].to(hidden.dtype), hidden[:, 1:]], dim=1)  # col 0: site
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def build(batch: list[_Fitting]) -> _SuffixRunner:
        rows, prefix_deltas, counts = _batch_rows(batch)
        runner = _SuffixRunner(model, SplitRows.build(tokenizer, rows, device),
                               (site, prefix_deltas) if prefix_deltas else None, below)
        state.update(fittings=batch, owner=torch.arange(len(batch), device=device).repeat_interleave(
            torch.tensor(counts, device=device)), firsts=[sum(counts[:i]) for i in range(len(counts))])
        return runner

    runner = build(active)
    handle = site.register_forward_hook(add_delta)
    try:
        with frozen(model), torch.enable_grad():
            for step in range(config.steps + 1):
                if not active:
                    break
                if len(active) < len(state["fittings"]):
                    handle.remove()  # the prefix forward must not add δ
                    runner = build(active)
                    handle = site.register_forward_hook(add_delta)
                logits = runner.logits()
                losses, going, at = [], [], 0
                for fitting in active:
                    own, at = logits[at: at + len(fitting.problem.rows)], at + len(fitting.problem.rows)
                    loss = _value_step_loss(fitting, own, step, config)
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
                    _step(fitting, width, config)
                active = going
    finally:
        handle.remove()
    seconds = (time.perf_counter() - start) / max(len(problems), 1)
    fits = []
    for fitting in fittings:
        problem = fitting.problem
        logger.debug("value for %r -> %r: %d steps, p %.3f -> %.3f", problem.subject, problem.target_text[:40],
                     fitting.steps, fitting.prob_before, fitting.prob)
        report = EditReport(subject=problem.subject, target=problem.target_text, steps=fitting.steps,
                            prob_before=fitting.prob_before, prob_after=fitting.prob, seconds=seconds)
        assert fitting.init is not None
        fits.append(ValueFit(fitting.delta().detach(), fitting.init, report))
    return fits


def _value_step_loss(fitting: _Fitting, logits: Sequence[torch.Tensor], step: int, config: ValueConfig
                     ) -> torch.Tensor | None:
    """The loss to step on, or None once the stop test is met (or the steps are spent)."""
    n_rewrite, targets = fitting.problem.n_rewrite, fitting.targets
    token_lp = torch.stack([torch.log_softmax(row.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
                            for row in logits[:n_rewrite]])  # [rows, target tokens]
    kl_lp = torch.log_softmax(torch.cat(list(logits[n_rewrite:])).float(), dim=-1) if len(logits) > n_rewrite else None
    fitting.prob = float(token_lp.detach().mean(dim=1).exp().mean())
    if step == 0:
        fitting.kl_init, fitting.prob_before = (kl_lp.detach() if kl_lp is not None else None), fitting.prob
    reached = (fitting.prob >= config.stop_prob if config.stop_margin is None
               else _greedy_margin(logits[:n_rewrite], targets) >= config.stop_margin)
    if reached or step == config.steps:
        return None
    assert fitting.init is not None
    loss = -token_lp.mean()
    if kl_lp is not None and fitting.kl_init is not None:  # summed in ROME's order: target, KL, decay
        loss = loss + config.kl_factor * F.kl_div(fitting.kl_init, kl_lp, log_target=True, reduction="batchmean")
    return loss + config.weight_decay * fitting.delta().norm() / fitting.init.norm()


def _step(fitting: _Fitting, width: int, config: ValueConfig) -> None:
    theta = fitting.theta
    if fitting.optimiser is None:  # normalised gradient step: δ moves lr·‖v‖, i.e. θ moves lr·√width
        with torch.no_grad():
            assert theta.grad is not None
            theta.sub_(theta.grad * (config.lr * width**0.5 / theta.grad.norm().clamp_min(1e-12)))
    else:
        fitting.optimiser.step()
    with torch.no_grad():  # ‖δ‖ ≤ clamp · ‖v‖, i.e. ‖θ‖ ≤ clamp · √width
        max_norm = config.clamp_norm_factor * width**0.5
        if theta.norm() > max_norm:
            theta.mul_(max_norm / theta.norm())
