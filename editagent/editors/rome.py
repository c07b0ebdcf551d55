"""ROME: a rank-one update of one MLP down projection that writes one fact (Meng et al., 2022).

For an edit (prompt, subject, target): the keys k_t are the down projection's input at the subject's last
token of the prompt behind each of a few short context prefixes t (the bare prompt included); a vector δ
added to the down projection's output at that token is optimised so the model continues every prefixed
prompt with the target, while a KL term keeps the subject's "{} is a" distribution where it was; then

    ΔW = δ uᵀ,  u = C⁻¹K (KᵀC⁻¹K)⁻¹ 1   (K = [k_1 … k_T])

the update of least C-weighted size (least expected change on other keys, C = E[k kᵀ] from ``stats``)
that adds exactly δ at every template's key: ΔW k_t = δ. With one key it is ROME's δ (C⁻¹k)ᵀ / (kᵀC⁻¹k).
ROME instead takes the key averaged over templates (and, in its code, divides by the bare prompt's key).
Both fail on models without a BOS token: there the bare prompt's subject sits at the first positions,
whose keys differ from the prefixed ones, so the averaged key gave the bare prompt only 0.4 of δ on
SmolLM2 (greedy still said the old object), and dividing by a position-0 key, which every prompt
shares, changed 20 of 20 unrelated prompts.

The value optimisation lives in ``value`` (shared with MEMIT, which adds δ to a block's output instead,
and AnyEdit); C⁻¹ per layer is computed once per editor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from editagent.editors.arch import ModelArch
from editagent.editors.base import AppliedEdit, EditReport, WeightEdit, WeightWriter, as_edits, model_fingerprint
from editagent.editors.stats import key_second_moment
from editagent.editors.value import ValueConfig, context_templates, optimise_values, template_keys

logger = logging.getLogger(__name__)


class RomeConfig(ValueConfig):
    """ROME settings; ``layer`` None takes the architecture's default (an early-middle layer)."""

    layer: int | None = Field(None, ge=0, description="block whose down projection is edited")
    mom2_ridge: float = Field(1e-2, ge=0, description="C + ridge·mean(diag C)·I before inverting: C from 30k "
                                                      "tokens is noisy in its small directions (1e-5 → 1e-2 on "
                                                      "SmolLM2: generalization 0.55 → 0.75, same locality)")
    key_ridge: float = Field(1e-3, ge=0, description="KᵀC⁻¹K + ridge·mean(diag)·I: template keys can be near "
                                                     "collinear")


# -- ROME ----------------------------------------------------------------------------------------------


class ROME:
    """Rank-one model editing of one layer: ``ROME(model, tokenizer).apply(edits)`` returns an ``AppliedEdit``.

    Several edits in one call are written one after another, each computed on the model as already edited.
    ``stats_texts``: a corpus for the key statistics; by default the model samples its own text (offline).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, config: RomeConfig | Mapping[str, Any] | None = None, *,
                 stats_texts: Sequence[str] | None = None, cache_dir: str | Path | None = None,
                 progress: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config if isinstance(config, RomeConfig) else RomeConfig.model_validate(config or {})
        self.arch = ModelArch(model)
        chosen = self.config.layer if self.config.layer is not None else self.arch.rome_layer
        self.layer = self.arch.check_layer(chosen, "layer")
        self.templates = context_templates(self.config.n_context_templates)
        self.stats_texts = stats_texts
        self.cache_dir = cache_dir
        self.progress = progress
        self._fingerprint: str | None = None
        self._inverse: dict[int, torch.Tensor] = {}

    @property
    def fingerprint(self) -> str:
        """The model's fingerprint (unchanged by edits, so computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.arch)
        return self._fingerprint

    def inverse_second_moment(self, layer: int) -> torch.Tensor:
        """C⁻¹ at ``layer`` (float64), from cached statistics; kept for later edits."""
        if layer not in self._inverse:
            moment = key_second_moment(self.model, self.tokenizer, layer, texts=self.stats_texts,
                                       n_tokens=self.config.stats_tokens, cache_dir=self.cache_dir,
                                       progress=self.progress, fingerprint=self.fingerprint)
            ridge = self.config.mom2_ridge * moment.diagonal().mean()
            eye = torch.eye(len(moment), dtype=moment.dtype, device=moment.device)
            self._inverse[layer] = torch.linalg.inv(moment + ridge * eye)
        return self._inverse[layer]

    def apply(self, edits: WeightEdit | Mapping[str, Any] | Sequence[WeightEdit | Mapping[str, Any]]) -> AppliedEdit:
        """Write ``edits`` into the weights; ``handle.undo()`` takes them out again."""
        items = as_edits(edits)
        fingerprint = self.fingerprint
        inverse = self.inverse_second_moment(self.layer)
        writer = WeightWriter(self.model)
        reports = []
        try:
            for edit in items:
                reports.append(self._write(edit, inverse, writer))
        except BaseException:
            writer.restore()
            raise
        return writer.finish(method="rome", edits=items, fingerprint=fingerprint, reports=reports)

    def _write(self, edit: WeightEdit, inverse: torch.Tensor, writer: WeightWriter) -> EditReport:
        start = time.perf_counter()
        keys = template_keys(self.model, self.tokenizer, self.arch, self.layer, [edit], self.templates)[0]  # [T, in]
        whitened = inverse @ keys.T  # C⁻¹K, [in, T]
        gram = keys @ whitened
        eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        gram = gram + self.config.key_ridge * gram.diagonal().mean() * eye
        direction = whitened @ torch.linalg.solve(gram, eye.sum(dim=1))  # u with u·k_t = 1 for every t
        fit = optimise_values(self.model, self.tokenizer, [edit], self.arch.mlp_out(self.layer),
                              self.arch.value_dim(self.layer), self.templates, self.config)[0]
        update = torch.outer(fit.delta.double(), direction)  # [out, in]
        writer.add(self.arch.weight_name(self.layer), self.arch.to_param_layout(update))
        report = fit.report.model_copy(update={"seconds": time.perf_counter() - start})
        logger.info("ROME layer %d: %r -> %r in %.1f s (%d steps, target p %.2f -> %.2f)", self.layer, edit.subject,
                    edit.target, report.seconds, report.steps, report.prob_before, report.prob_after)
        return report
