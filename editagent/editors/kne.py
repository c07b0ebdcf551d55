"""KNE: find the knowledge neuronal ensemble of an edit by gradient attribution, layer by layer, then train only the
ensemble's parameters (Li et al., 2024, "Knowledge Editing for Large Language Model with Knowledge Neuronal
Ensemble", Knowledge-Based Systems).

1. Attribution: one forward and backward pass of the edit loss (FT-M's: teacher-forced cross-entropy over the target
   tokens, on the bare prompt and ``n_context_templates`` prefixed copies). A neuron i of layer l is scored by the
   first-order change of the loss when its value slot (column i of the down projection) is scaled:
   s_i = |Σ_positions a_i · ∂L/∂a_i| = |Σ_j W_ji · ∂L/∂W_ji|, a the down projection's input. This is the paper's
   gradient attribution of each parameter, summed over the parameters of one neuron.
2. Ensemble: in each searched layer, the ``neuron_share`` of neurons with the largest scores. Taking a share per
   layer, rather than a global top list, keeps every layer in the ensemble: the paper's point that the layers
   interact while they are updated together.
3. Update: only the ensemble's value slots are trained, all layers together (one backward pass reaches them all),
   with the same loss, until greedy decoding gives every target by ``stop_margin`` logits. Fewer parameters move
   than in FT-M's whole layer.

All edits of one call are attributed and trained together (the paper's batch editing). The share and learning rate
are ours, measured in ``docs/decisions.md``: the paper tunes them per model.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from torch import nn

from editagent.editors.base import EditReport, WeightEdit, WeightWriter, frozen
from editagent.editors.config import CONTEXT_PREFIXES, KneConfig
from editagent.editors.editor import Editor
from editagent.editors.finetune import (
    ColumnChange,
    TargetRows,
    edit_loss,
    fit_changes,
    mean_probs,
    target_logprobs,
    target_rows,
)
from editagent.editors.prompts import device_of

logger = logging.getLogger(__name__)


class KNE(Editor):
    """Knowledge-neuronal-ensemble editing (see the module doc); ``compute``/``apply`` as every ``Editor``."""

    method = "kne"
    config_type = KneConfig
    config: KneConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: KneConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.layers = self.arch.check_layers(self.config.layers, range(self.arch.n_layers))
        self._typical: dict[int, torch.Tensor] | None = None

    def _write(self, items: list[WeightEdit], writer: WeightWriter) -> list[EditReport]:
        start = time.perf_counter()
        rows = target_rows(self.tokenizer, items, self.templates, device_of(self.model))
        ensemble = self.ensemble(rows)
        changes = [ColumnChange(layer, columns, torch.zeros(self.arch.value_dim(layer), len(columns),
                                                            device=columns.device, requires_grad=True))
                   for layer, columns in ensemble.items()]
        fit = fit_changes(self.model, self.arch, rows, changes, self.config, len(items), loss="target")
        for change in changes:
            change.write(self.arch, writer)
        with torch.no_grad():  # read back from the written weights, which is what apply gives
            logits = rows.logits(self.model)
        after = mean_probs(target_logprobs(logits, rows.targets), rows.owner, len(items))
        seconds = (time.perf_counter() - start) / len(items)
        logger.info("KNE: %d edits, %d neurons in %d layers, %d steps, %.1f s/edit, target p %.2f -> %.2f",
                    len(items), sum(len(columns) for columns in ensemble.values()), len(ensemble), fit.steps,
                    seconds, sum(fit.before) / len(items), sum(after) / len(items))
        return [EditReport(subject=edit.subject, target=edit.target, steps=fit.steps, prob_before=fit.before[i],
                           prob_after=after[i], seconds=seconds) for i, edit in enumerate(items)]

    def attribution(self, rows: TargetRows) -> dict[int, torch.Tensor]:
        """Per searched layer, each neuron's |Σ a · ∂L/∂a| over every position of ``rows``: [key_dim]."""
        caught: dict[int, torch.Tensor] = {}

        def catch(layer: int) -> Any:
            def read(_module: nn.Module, args: Any) -> None:
                args[0].retain_grad()
                caught[layer] = args[0]
            return read

        def track(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)  # the weights are frozen: the graph starts at the embeddings

        handles = [self.arch.mlp_out(layer).register_forward_pre_hook(catch(layer)) for layer in self.layers]
        handles.append(self.model.get_input_embeddings().register_forward_hook(track))
        try:
            with frozen(self.model), torch.enable_grad():
                logits = rows.logits(self.model)
                edit_loss(logits, rows, target_logprobs(logits, rows.targets), "target").backward()
        finally:
            for handle in handles:
                handle.remove()
        mask = rows.attention_mask[..., None].float()
        return {layer: (activations.detach().float() * activations.grad.float() * mask).sum(dim=(0, 1)).abs()
                for layer, activations in caught.items() if activations.grad is not None}

    def typical_activations(self) -> dict[int, torch.Tensor]:
        """Per searched layer, each neuron's rms activation over every token of neutral sentences: [key_dim]."""
        if self._typical is None:
            caught: dict[int, list[torch.Tensor]] = {layer: [] for layer in self.layers}

            def catch(layer: int) -> Any:
                def read(_module: nn.Module, args: Any) -> None:
                    caught[layer].append(args[0][0].detach().float())
                return read

            handles = [self.arch.mlp_out(layer).register_forward_pre_hook(catch(layer)) for layer in self.layers]
            try:
                with torch.no_grad():
                    for text in CONTEXT_PREFIXES:
                        self.model(**self.tokenizer(text, return_tensors="pt").to(device_of(self.model)))
            finally:
                for handle in handles:
                    handle.remove()
            self._typical = {layer: torch.cat(parts).pow(2).mean(dim=0).sqrt() for layer, parts in caught.items()}
        return self._typical

    def ensemble(self, rows: TargetRows) -> dict[int, torch.Tensor]:
        """Per layer, the indices of the ``neuron_share`` of its neurons with the largest attribution (sorted)."""
        scores = self.attribution(rows)
        if self.config.specific:
            typical = self.typical_activations()
            scores = {layer: score / (typical[layer] + typical[layer].mean()) for layer, score in scores.items()}
        chosen = {}
        for layer, score in scores.items():
            count = max(1, math.ceil(self.config.neuron_share * score.numel()))
            chosen[layer] = torch.topk(score, count).indices.sort().values
        return chosen
