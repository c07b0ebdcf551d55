"""KN: find the knowledge neurons behind what the model says now, then move their value slots from that answer to the
target (Dai et al., 2022, "Knowledge Neurons in Pretrained Transformers").

1. The answer to replace is the model's greedy next token after the prompt (the paper's ground truth; an edit here
   names only its new target).
2. Attribution, per prompt (the bare one and ``n_context_templates`` prefixed copies) and per layer: integrated
   gradients of that answer's probability at the prompt's last token with respect to the MLP's intermediate
   activations a there (the down projection's input), scaled from 0 to a in ``ig_steps`` steps (Riemann sum):
   attr_i = a_i · mean_k ∂P(answer | α_k a) / ∂a_i, α_k = k / (steps − 1).
3. Coarse neurons: attributions above ``threshold`` times the largest one of that prompt, over all layers searched;
   with several prompts only the neurons coarse in more than ``prompt_share`` of them are kept (the paper's
   refinement).
4. Edit: each neuron's value slot (its column of the down projection) gains λ·sign(a_i)·(e_target − e_answer), e the
   tokens' output embeddings (the input ones in the paper, the same vectors for tied models; the first target token
   only, as in the paper's single-token objects). The sign makes the neuron's output move towards the target even
   where a gated MLP's activation is negative; λ = 2 as in the paper's code.

Edits of one call are written one after another, each attributed on the model as already edited.

The slot's change is added to the residual stream as it is only where the MLP output is (not behind Gemma 3's
output norm, where KN warns); and λ is absolute, so how far the target gets depends on the scale of the model's
activations and embeddings: the method as published, a baseline rather than a tuned editor.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from editagent.editors.base import EditReport, WeightEdit, WeightWriter, fill, frozen
from editagent.editors.config import KnConfig
from editagent.editors.editor import Editor
from editagent.editors.finetune import mean_probs, target_logprobs, target_rows
from editagent.editors.prompts import device_of

logger = logging.getLogger(__name__)


class KN(Editor):
    """Knowledge-neuron editing (see the module doc); ``compute``/``apply`` as every ``Editor``."""

    method = "kn"
    config_type = KnConfig
    config: KnConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: KnConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.layers = self.arch.check_layers(self.config.layers, range(self.arch.n_layers))
        if any(self.arch.mlp_output_norm(layer) is not None for layer in self.layers):
            logger.warning("KN on a model that normalises its MLP output (%s) is not effective: the norm rescales a "
                           "value slot's change instead of adding it to the residual stream", self.arch.model_type)

    def _write(self, items: list[WeightEdit], writer: WeightWriter) -> list[EditReport]:
        return [self._write_one(edit, writer) for edit in items]

    def _write_one(self, edit: WeightEdit, writer: WeightWriter) -> EditReport:
        start = time.perf_counter()
        device = device_of(self.model)
        prompts = [list(self.tokenizer(fill(fill(t, edit.template), edit.subject))["input_ids"])
                   for t in self.templates]
        rows = target_rows(self.tokenizer, [edit], self.templates, device)
        with torch.no_grad():
            before = mean_probs(target_logprobs(rows.logits(self.model), rows.targets),
                                rows.owner, 1)[0]
            answer = int(self.model(input_ids=torch.tensor([prompts[0]], device=device)).logits[0, -1].argmax())
        target = int(rows.targets[0][0])
        neurons = self.neurons(prompts, answer)
        unembed = self.arch.unembed.weight.detach().double()
        direction = self.config.scale * (unembed[target] - unembed[answer])  # [hidden]
        for layer, (indices, signs) in neurons.items():
            update = torch.zeros(self.arch.value_dim(layer), self.arch.key_dim(layer), dtype=torch.float64,
                                 device=direction.device)
            update[:, indices] = direction[:, None] * signs[None, :].double()
            writer.add(self.arch.weight_name(layer), self.arch.to_param_layout(update))
        with torch.no_grad():
            after = mean_probs(target_logprobs(rows.logits(self.model), rows.targets),
                               rows.owner, 1)[0]
        count = sum(len(indices) for indices, _ in neurons.values())
        report = EditReport(subject=edit.subject, target=edit.target, steps=0, prob_before=before, prob_after=after,
                            seconds=time.perf_counter() - start)
        logger.info("KN: %r -> %r (was %r): %d neurons in layers %s, %.1f s, target p %.2f -> %.2f", edit.subject,
                    edit.target, self.tokenizer.decode([answer]), count, sorted(neurons), report.seconds, before,
                    after)
        return report

    def neurons(self, prompts: Sequence[list[int]], answer: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The refined knowledge neurons of ``answer`` over ``prompts`` (token ids): layer -> (indices, signs of
        their activations at the bare prompt's last token)."""
        counts: dict[tuple[int, int], int] = {}
        signs: dict[int, torch.Tensor] = {}
        for number, ids in enumerate(prompts):
            attributions = self.attributions(ids, answer)
            if number == 0:
                signs = {layer: torch.sign(activations) for layer, (_, activations) in attributions.items()}
            peak = max(float(scores.max()) for scores, _ in attributions.values())
            for layer, (scores, _) in attributions.items():
                for index in torch.nonzero(scores > self.config.threshold * peak).flatten().tolist():
                    counts[layer, index] = counts.get((layer, index), 0) + 1
        needed = self.config.prompt_share * len(prompts) if len(prompts) > 1 else 0
        kept: dict[int, list[int]] = {}
        for (layer, index), count in sorted(counts.items()):
            if count > needed:
                kept.setdefault(layer, []).append(index)
        return {layer: (torch.tensor(indices, device=signs[layer].device), signs[layer][indices].masked_fill(
            signs[layer][indices] == 0, 1.0)) for layer, indices in kept.items()}

    def attributions(self, ids: list[int], answer: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer of ``layers``: integrated gradients of P(answer) at the last token over that layer's MLP
        activations there, and those activations ([key_dim], [key_dim]).

        Only the last token's activations are scaled, so the tokens before it are the same in every Riemann step
        and every layer's pass: they run once into a KV cache (``ig_steps`` identical rows), and each layer's pass
        runs the last token alone over a copy of it."""
        from transformers import DynamicCache  # noqa: PLC0415 - heavy import, needed only when editing

        steps, device = self.config.ig_steps, device_of(self.model)
        batch = torch.tensor([ids] * steps, device=device)
        cache = None
        if len(ids) > 1:
            with torch.no_grad():
                cache = self.model(input_ids=batch[:, :-1], cache=DynamicCache(), use_cache=True).cache
        last = batch[:, -1:]

        def run() -> torch.Tensor:
            copied = copy.deepcopy(cache) if cache is not None else None
            return self.model(input_ids=last, cache=copied, use_cache=copied is not None).logits[:, -1]

        caught: dict[int, torch.Tensor] = {}

        def reader(layer: int) -> Any:
            def read(_module: nn.Module, args: Any) -> None:
                caught[layer] = args[0][0, -1].detach().float()
            return read

        handles = [self.arch.mlp_out(layer).register_forward_pre_hook(reader(layer)) for layer in self.layers]
        try:
            with torch.no_grad():
                run()
        finally:
            for handle in handles:
                handle.remove()
        alphas = torch.linspace(0, 1, steps, device=device)[:, None]
        found = {}
        for layer in self.layers:
            activations = caught[layer]
            scaled = (alphas * activations).requires_grad_(True)  # [steps, key_dim]

            def substitute(_module: nn.Module, args: Any, scaled: torch.Tensor = scaled) -> Any:
                inputs = args[0].clone()
                inputs[:, -1] = scaled.to(inputs.dtype)
                return (inputs, *args[1:])

            handle = self.arch.mlp_out(layer).register_forward_pre_hook(substitute)
            try:
                with frozen(self.model), torch.enable_grad():
                    probability = torch.softmax(run().float(), dim=-1)[:, answer].sum()
                    (gradient,) = torch.autograd.grad(probability, scaled)
            finally:
                handle.remove()
            found[layer] = (activations * gradient.mean(dim=0), activations)
        return found
