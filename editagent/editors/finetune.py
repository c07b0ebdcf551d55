"""FT-L and FT-M: fine-tune one MLP down projection's weight on the edit prompts, the baselines every editing paper
compares against.

FT-L (Zhu et al., 2020, "Modifying Memories in Transformer Models"; as the baseline of Meng et al., 2022, ROME,
appendix on FT-L): Adam steps on one layer's MLP output weight, after each step clamping every weight's change to
±ε (the L∞ norm constraint), with ROME's loss: the log-probability of each target token read at the prompt's last
position (``loss="prompt_last"``). ROME's GPT-2 XL settings are the defaults: 25 steps, lr = ε = 5e-4.

FT-M (EasyEdit, Zhang et al., 2024, "A Comprehensive Study of Knowledge Editing for Large Language Models"): the
same fine-tuning with the teacher-forced cross-entropy over the target tokens only (the prompt's tokens masked out,
``loss="target"``), and no L∞ bound unless ``norm_constraint`` is set.

Both train all edits of one call together, on the bare prompt and ``n_context_templates`` prefixed copies, and stop
as soon as greedy decoding gives every target by ``stop_margin`` logits. Only the down projection's weight moves
(not its bias): the model fingerprint leaves exactly those weights out, so saved edits stack.

The change ΔW is held apart from the weight, in float32, and the forward pass adds ΔW x to the projection's output
(the same function and gradients as W + ΔW); ``compute`` then writes it once. Small steps on half-precision weights
would otherwise round away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from editagent.editors.base import EditReport, WeightEdit, WeightWriter, fill, frozen
from editagent.editors.capture import hidden
from editagent.editors.config import FineTuneConfig, FtlConfig, FtmConfig
from editagent.editors.editor import Editor
from editagent.editors.prompts import device_of, keeps_logits, left_pad
from editagent.schema import EditError

logger = logging.getLogger(__name__)


@dataclass
class TargetRows:
    """Each edit's prompt (behind each template) followed by its target but the last token, left-padded: column
    ``sites[r][j]`` of row r is where target token ``targets[r][j]`` is predicted (the first one at the prompt's
    last token). ``owner[r]``: the edit row r belongs to."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    sites: list[list[int]]
    targets: list[torch.Tensor]
    owner: list[int]

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}

    def at_sites(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """``tensor`` [rows, columns, ...] at each row's sites: per row [target tokens, ...]."""
        return [tensor[row, cols] for row, cols in enumerate(self.sites)]

    def logits(self, model: nn.Module) -> list[torch.Tensor]:
        """The model's logits at each row's sites: per row [target tokens, vocab]. Every row ends with its target,
        so the sites lie in the last ``keep`` columns, and only those go through the LM head where the model allows
        it: a small model's head over a large vocabulary costs as much as several of its blocks."""
        if not keeps_logits(model):
            return self.at_sites(model(**self.inputs(), use_cache=False).logits)
        keep = max(len(cols) for cols in self.sites)
        first = self.input_ids.shape[1] - keep
        logits = model(**self.inputs(), use_cache=False, logits_to_keep=keep).logits
        return [logits[row, [col - first for col in cols]] for row, cols in enumerate(self.sites)]


def target_rows(tokenizer: Any, edits: Sequence[WeightEdit], templates: Sequence[str],
                device: torch.device) -> TargetRows:
    """The rows of ``edits`` behind ``templates`` (``"{}"``: the bare prompt), as ``TargetRows``."""
    rows: list[tuple[list[int], list[int], int]] = []
    for index, edit in enumerate(edits):
        target = list(tokenizer(edit.target, add_special_tokens=False)["input_ids"])
        if not target:
            raise EditError(f"target: {edit.target!r} encodes to no tokens; give a non-empty word")
        for template in templates:
            prompt = list(tokenizer(fill(fill(template, edit.template), edit.subject),
                                    add_special_tokens=True)["input_ids"])
            rows.append((prompt, target, index))
    width = max(len(prompt) + len(target) - 1 for prompt, target, _ in rows)
    batch = left_pad(tokenizer, [prompt + target[:-1] for prompt, target, _ in rows], device)
    sites = [list(range(width - len(target), width)) for _, target, _ in rows]  # where each target token is read
    return TargetRows(batch["input_ids"], batch["attention_mask"], batch["position_ids"], sites,
                      [torch.tensor(target, device=device) for _, target, _ in rows], [owner for *_, owner in rows])


def greedy_margins(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per row, the smallest lead of a target token's logit over the best other token (``logits[r]``: [tokens,
    vocab]): positive exactly when greedy decoding of that row gives its whole target."""
    margins = []
    for rows, wanted in zip(logits, targets, strict=True):
        rows = rows.detach().float()
        chosen = rows.gather(1, wanted[:, None]).squeeze(1)
        others = rows.scatter(1, wanted[:, None], float("-inf")).max(dim=1).values
        margins.append((chosen - others).min())
    return torch.stack(margins)


def target_logprobs(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per row, the log-probability of each target token where it is predicted: [tokens]."""
    return [torch.log_softmax(rows.float(), dim=-1).gather(1, wanted[:, None]).squeeze(1)
            for rows, wanted in zip(logits, targets, strict=True)]


def mean_probs(logprobs: Sequence[torch.Tensor], owner: Sequence[int], n_edits: int) -> list[float]:
    """Per edit, the mean target-token probability over its rows (``EditReport``'s reading)."""
    per_edit: list[list[float]] = [[] for _ in range(n_edits)]
    for row, edit in zip(logprobs, owner, strict=True):
        per_edit[edit].append(float(row.detach().mean().exp()))
    return [sum(probs) / len(probs) for probs in per_edit]


class FineTune(Editor):
    """Fine-tuning of one down projection's weight (FT-L, FT-M; see the module doc); ``compute``/``apply`` as every
    ``Editor``. All edits of one call are trained together."""

    method = "ft"
    config_type = FineTuneConfig
    config: FineTuneConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: FineTuneConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.layer = self.arch.check_layer(self.config.layer, "layer", self.arch.rome_layer)

    def _write(self, items: list[WeightEdit], writer: WeightWriter) -> list[EditReport]:
        start = time.perf_counter()
        config, arch = self.config, self.arch
        rows = target_rows(self.tokenizer, items, self.templates, device_of(self.model))
        weight = arch.weight(self.layer)
        change = ColumnChange(self.layer, None, torch.zeros(arch.value_dim(self.layer), arch.key_dim(self.layer),
                                                            device=weight.device, requires_grad=True))
        fit = fit_changes(self.model, arch, rows, [change], config, len(items), loss=config.loss)
        change.write(arch, writer)
        with torch.no_grad():  # read back from the written weight, which is what apply gives
            logits = rows.logits(self.model)
        after = mean_probs(target_logprobs(logits, rows.targets), rows.owner, len(items))
        seconds = (time.perf_counter() - start) / len(items)
        logger.info("%s layer %d: %d edits in %d steps, %.1f s/edit, max |ΔW| %.2g, target p %.2f -> %.2f",
                    self.method.upper(), self.layer, len(items), fit.steps, seconds,
                    float(change.delta.detach().abs().max()), sum(fit.before) / len(items), sum(after) / len(items))
        return [EditReport(subject=edit.subject, target=edit.target, steps=fit.steps, prob_before=fit.before[i],
                           prob_after=after[i], seconds=seconds) for i, edit in enumerate(items)]


@dataclass
class ColumnChange:
    """A trainable change of ``layer``'s down projection weight, restricted to ``columns`` (its value slots, one per
    MLP neuron; None: all): ``delta`` is [out, len(columns)] in float32, held apart from the weight."""

    layer: int
    columns: torch.Tensor | None
    delta: torch.Tensor

    def output(self, inputs: torch.Tensor) -> torch.Tensor:
        """What the change adds to the projection's output for ``inputs`` (the projection's input)."""
        chosen = inputs if self.columns is None else inputs[..., self.columns]
        return F.linear(chosen.float(), self.delta)

    def write(self, arch: Any, writer: WeightWriter) -> None:
        full = self.delta.detach()
        if self.columns is not None:
            full = torch.zeros(arch.value_dim(self.layer), arch.key_dim(self.layer), dtype=full.dtype,
                               device=full.device).index_copy_(1, self.columns, full)
        writer.add(arch.weight_name(self.layer), arch.to_param_layout(full))


@dataclass
class Fit:
    steps: int
    before: list[float]  # per edit, the mean target-token probability before the first step


def fit_changes(model: nn.Module, arch: Any, rows: TargetRows, changes: Sequence[ColumnChange],
                config: FineTuneConfig, n_edits: int, loss: str) -> Fit:
    """Train ``changes`` together (each added to its layer's output by a forward hook: the same function and
    gradients as W + ΔW) until greedy decoding gives every target by ``config.stop_margin`` logits or
    ``config.steps`` run out; ``loss`` as in ``FineTuneConfig.loss``. The model's weights are not touched."""
    parameters = [change.delta for change in changes]
    optimiser: torch.optim.Optimizer = (torch.optim.Adam(parameters, lr=config.lr) if config.optimizer == "adam"
                                        else torch.optim.SGD(parameters, lr=config.lr))

    def hook_of(change: ColumnChange) -> Any:
        def add_change(_module: nn.Module, args: Any, output: Any) -> Any:
            states = hidden(output)
            states = states + change.output(args[0]).to(states.dtype)
            return (states, *output[1:]) if isinstance(output, tuple) else states
        return add_change

    steps, before = 0, None
    handles = [arch.mlp_out(change.layer).register_forward_hook(hook_of(change)) for change in changes]
    try:
        with frozen(model), torch.enable_grad():
            for step in range(config.steps + 1):
                logits = rows.logits(model)
                logprobs = target_logprobs(logits, rows.targets)
                if before is None:
                    before = mean_probs(logprobs, rows.owner, n_edits)
                steps = step
                if step == config.steps or bool((greedy_margins(logits, rows.targets) >= config.stop_margin).all()):
                    break
                edit_loss(logits, rows, logprobs, loss).backward()
                optimiser.step()
                optimiser.zero_grad()
                if config.norm_constraint is not None:
                    with torch.no_grad():
                        for parameter in parameters:
                            parameter.clamp_(-config.norm_constraint, config.norm_constraint)
    finally:
        for handle in handles:
            handle.remove()
    return Fit(steps, before or [])


def edit_loss(logits: Sequence[torch.Tensor], rows: TargetRows, logprobs: Sequence[torch.Tensor], loss: str
              ) -> torch.Tensor:
    """Mean over rows of the row's loss: the target tokens' mean negative log-probability where each is predicted
    (``target``), or each one's at the prompt's last position (``prompt_last``, ROME's FT-L)."""
    if loss == "target":
        return -torch.stack([row.mean() for row in logprobs]).mean()
    last = [torch.log_softmax(row[0].float(), dim=-1)[wanted] for row, wanted in zip(logits, rows.targets,
                                                                                      strict=True)]
    return -torch.stack([row.mean() for row in last]).mean()


class FTL(FineTune):
    """FT-L: ROME's loss at the prompt's last position, each weight's change clamped to ±``norm_constraint``."""

    method = "ft-l"
    config_type = FtlConfig
    config: FtlConfig


class FTM(FineTune):
    """FT-M: teacher-forced cross-entropy over the target tokens only."""

    method = "ft-m"
    config_type = FtmConfig
    config: FtmConfig
