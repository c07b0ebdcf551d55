"""ROME: a rank-one update of one MLP down projection that writes one fact (Meng et al., 2022).

For an edit (prompt, subject, target): the key k* is the down projection's input at the subject's last
token, averaged over the prompt behind a few short context prefixes; a vector δ added to the down
projection's output at that token is optimised so the model continues every prefixed prompt with the
target, while a KL term keeps the subject's "{} is a" distribution where it was; then

    ΔW = δ (C⁻¹ k*)ᵀ / (k*ᵀ C⁻¹ k*)

so that W' k* = W k* + δ (the paper's v* − W k* with v* = W k* + δ), with C = E[k kᵀ] from ``stats``.
(ROME's code instead divides by the bare prompt's key; that writes the bare prompt exactly, but when the
subject is the prompt's first token, in a model without a BOS token, that key is the position-0 key every
prompt shares, and on SmolLM2 the edit then changed 20 of 20 unrelated prompts.)

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
from editagent.editors.value import ValueConfig, context_templates, optimise_value, subject_keys

logger = logging.getLogger(__name__)


class RomeConfig(ValueConfig):
    """ROME settings; ``layer`` None takes the architecture's default (an early-middle layer)."""

    layer: int | None = Field(None, ge=0, description="block whose down projection is edited")
    mom2_ridge: float = Field(1e-5, ge=0, description="C + ridge·mean(diag C)·I before inverting, for stability")


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
        key = subject_keys(self.model, self.tokenizer, self.arch, self.layer, [edit], self.templates)[0]
        fit = optimise_value(self.model, self.tokenizer, edit, self.arch.mlp_out(self.layer),
                             self.arch.value_dim(self.layer), self.templates, self.config)
        direction = inverse @ key
        update = torch.outer(fit.delta.double(), direction) / (key @ direction)  # [out, in]
        writer.add(self.arch.weight_name(self.layer), self.arch.to_param_layout(update))
        report = fit.report.model_copy(update={"seconds": time.perf_counter() - start})
        logger.info("ROME layer %d: %r -> %r in %.1f s (%d steps, target p %.2f -> %.2f)", self.layer, edit.subject,
                    edit.target, report.seconds, report.steps, report.prob_before, report.prob_after)
        return report
