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
whose keys differ from the prefixed ones, so an averaged key leaves the bare prompt short of δ, and a
position-0 key, which every prompt shares, carries the edit into unrelated prompts (docs/decisions.md).

The value optimisation lives in ``value`` (shared with MEMIT, which adds δ to a block's output instead,
and AnyEdit); C⁻¹ per layer is computed once per editor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from editagent.editors.arch import ModelArch
from editagent.editors.base import EditReport, WeightEdit, WeightWriter, fill
from editagent.editors.capture import Probe, capture
from editagent.editors.config import RomeConfig
from editagent.editors.editor import Editor
from editagent.editors.prompts import device_of, make_batch, subject_row
from editagent.editors.stats import key_second_moment
from editagent.editors.value import optimise_values

logger = logging.getLogger(__name__)


def template_keys(model: nn.Module, tokenizer: Any, arch: ModelArch, layer: int, edits: Sequence[WeightEdit],
                  templates: Sequence[str]) -> torch.Tensor:
    """The down projection's input at the subject's last token of each edit's prompt behind each context
    template, [edits, templates, key_dim] in float64."""
    rows = [subject_row(tokenizer, fill(t, edit.template), edit.subject) for edit in edits for t in templates]
    batch = make_batch(tokenizer, rows, device_of(model))
    keys = capture(model, batch.inputs(), [Probe(arch.mlp_out(layer), "input")], batch.at_subject)[0].double()
    return keys.view(len(edits), len(templates), -1)


# -- ROME ----------------------------------------------------------------------------------------------


class ROME(Editor):
    """Rank-one model editing of one layer: ``ROME(model, tokenizer).compute(edits)`` gives the ``Deltas``,
    ``.apply(edits)`` writes them and returns an ``AppliedEdit`` (see ``Editor``).

    Several edits in one call are written one after another, each computed on the model as already edited.
    """

    method = "rome"
    config_type = RomeConfig
    config: RomeConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: RomeConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.layer = self.arch.check_layer(self.config.layer, "layer", self.arch.rome_layer)
        self._inverse: dict[int, torch.Tensor] = {}

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

    def load_statistics(self) -> None:
        self.inverse_second_moment(self.layer)

    def _write(self, items: list[WeightEdit], writer: WeightWriter) -> list[EditReport]:
        inverse = self.inverse_second_moment(self.layer)
        return [self._write_one(edit, inverse, writer) for edit in items]

    def _write_one(self, edit: WeightEdit, inverse: torch.Tensor, writer: WeightWriter) -> EditReport:
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
