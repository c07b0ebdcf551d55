"""MEMIT: many facts at once, spread over a range of MLP layers (Meng et al., 2023).

1. For each edit, a target hidden state z_i at the top layer L of the range: the block output at the
   subject's last token with a δ_i optimised as in ROME (``value.optimise_values``) added at the block output,
   or, where the block normalises its MLP output, at the down projection's output (``MEMIT.value_site``).
2. For each layer l of the range, bottom up, with the weights as updated so far: keys K (one column per
   edit and context template), the residual R = (Z − h_L) / (layers left, this one included)
   where h_L are the current top-layer hidden states, and

       ΔW_l = R Kᵀ (λ C_l + K Kᵀ)⁻¹

   Where the block normalises the MLP output before adding it (Gemma 3's ``post_feedforward_layernorm``), the
   keys and C are taken divided by that norm's divisor at each token and R is carried back through its gain
   (``through_output_norm``); the next layers and step 3 make up what this linearisation misses.

Normalisation of λ (``mom2_update_weight``): C_l = E[k kᵀ] is a per-token mean, as in the MEMIT code,
so λ weighs C like λ extra tokens. For a typical key kᵀC⁻¹k ≈ key_dim, so how much of R one layer
writes depends on λ / key_dim; MEMIT's 15000 was set for GPT-J, whose keys are 16384 wide (0.92 · key_dim).
The default is λ = 1.3 · key_dim: with ``refits`` (step 3) making up what a stiffer write leaves short, a larger
λ keeps more of the other keys' outputs (docs/decisions.md).

``passes`` > 1 runs step 2 again on what is still missing: λC keeps one pass short of Z, which matters when
many positions must move together (AnyEdit's windows), not for one short fact.

3. ``refits`` rounds: step 1 again on the written model, for every edit; an edit that already passes the stop
   test costs one forward pass and keeps its place, one that fell short (the write also moves the subject's other
   tokens, which δ under the hook did not) gets a new δ, and step 2 writes the new goals.

``compute`` leaves the model as it was (``Editor``); steps 2 and 3 write into the weights meanwhile, because each
layer's keys and each refit are measured on the model as written so far.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from editagent.editors.arch import ModelArch
from editagent.editors.base import EditReport, WeightEdit, WeightWriter, fill
from editagent.editors.capture import PositionDeltas, Probe, adder, capture
from editagent.editors.config import MemitConfig
from editagent.editors.editor import Editor
from editagent.editors.prompts import PromptBatch, make_batch, subject_row
from editagent.editors.stats import key_second_moments
from editagent.editors.value import ValueFit, optimise_values

logger = logging.getLogger(__name__)

Measure = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # layer -> (keys there, top-layer outputs), now

UPDATE_WEIGHT_PER_KEY_DIM = 1.3


GAIN_FLOOR = 0.1  # of the median |gain|: output features the norm all but silences are written only that far


@torch.no_grad()
def normalised_keys(arch: ModelArch, layer: int, keys: torch.Tensor) -> torch.Tensor:
    """``keys`` [n, key_dim] as ``spread`` and C see them at ``layer``: divided by the divisor of the norm after
    the MLP at each key (``through_output_norm``), or as they are where there is no such norm; float64."""
    if arch.mlp_output_norm(layer) is None:
        return keys.double()
    divisor = arch.output_divisor(layer, arch.mlp_out(layer)(keys.to(arch.weight(layer).dtype)))
    return keys.double() / divisor.double()[:, None]  # type: ignore[union-attr]


@torch.no_grad()
def through_output_norm(arch: ModelArch, layer: int, residual: torch.Tensor, keys: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys [n, key_dim] and wanted output changes [n, value_dim] in the units ``spread`` solves in, for a layer
    whose MLP output y = W k passes through an RMSNorm, y ↦ g ⊙ y / s(y), before it joins the residual stream.

    With s held at its value for each token, the normalised output is g ⊙ W k̃, linear in k̃ = k / s: so the keys
    (here, and in the statistics C, ``key_second_moments(normalised=True)``) are k̃, and the residual r becomes
    r / g. Weighing every token's key by 1 / s is what makes λC keep the *normalised* outputs of other tokens: a
    token whose y is small has its output changes magnified by g / s.

    This is also exact, not just first order, for a goal the norm can reach: y + s · r / g = s · (N(y) + r) / g,
    whose normalised output is N(y) + r up to a scale factor, and exactly N(y) + r when that is itself a
    normalised output (as MEMIT's goal N(y + δ) is; with ε negligible and no gain floored). So the part of r / g
    along y is kept, although it is first-order inert: dropping it under-rotates large changes (docs/decisions.md).

    |g| is floored at ``GAIN_FLOOR`` · its median (trained gains span orders of magnitude and include zeros):
    features the norm all but silences get less than asked, which the next layers and ``refits`` make up.
    """
    gain = arch.output_gain(layer).double()
    floor = GAIN_FLOOR * gain.abs().median()
    gain = torch.where(gain.abs() < floor, floor * torch.where(gain < 0, -1.0, 1.0), gain)
    return normalised_keys(arch, layer, keys), residual.double() / gain


class MEMIT(Editor):
    """Mass-editing of a layer range: ``MEMIT(model, tokenizer).compute(edits)`` gives the ``Deltas`` of all
    ``edits`` written at once, ``.apply(edits)`` writes them and returns an ``AppliedEdit`` (see ``Editor``)."""

    method = "memit"
    config_type = MemitConfig
    config: MemitConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: MemitConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.layers = self.arch.check_layers(self.config.layers, self.arch.memit_layers)
        self._moments: dict[int, torch.Tensor] = {}

    @property
    def top(self) -> nn.Module:
        """The block whose outputs the goals are: the top of the layer range."""
        return self.arch.block(self.layers[-1])

    @property
    def value_site(self) -> nn.Module:
        """Where δ is fitted: the top block's output, or, where the block normalises its MLP output, the top down
        projection's own output (as in ROME). A δ sized for a large residual stream would ask each normalised MLP
        output to change many times its own size, far past what the linearised norm (``through_output_norm``)
        models; fitted behind the norm, its goal (the top block's output with δ added) is one that MLP can reach
        (docs/decisions.md)."""
        top = self.layers[-1]
        return self.arch.mlp_out(top) if self.arch.mlp_output_norm(top) is not None else self.top

    def update_weight(self, layer: int) -> float:
        """λ at ``layer`` (see the module doc for its normalisation)."""
        if self.config.mom2_update_weight is not None:
            return self.config.mom2_update_weight
        return UPDATE_WEIGHT_PER_KEY_DIM * self.arch.key_dim(layer)

    def second_moments(self) -> dict[int, torch.Tensor]:
        """C per edited layer, from cached statistics (one cut-short pass for all missing layers)."""
        missing = [layer for layer in self.layers if layer not in self._moments]
        if missing:
            self._moments.update(key_second_moments(
                self.model, self.tokenizer, missing, texts=self.stats_texts, n_tokens=self.config.stats_tokens,
                cache_dir=self.cache_dir, progress=self.progress, fingerprint=self.fingerprint, normalised=True))
        return {layer: self._moments[layer] for layer in self.layers}

    def load_statistics(self) -> None:
        self.second_moments()

    def spread(self, goals: torch.Tensor, writer: WeightWriter, measure: Measure) -> None:
        """Step 2 of the module doc: write ``goals`` [n, hidden] (top-layer outputs wanted at n key positions) over
        the layer range, bottom up. ``measure(layer)`` gives, with the weights as updated so far, the n keys at
        ``layer`` [n, key_dim] and the n top-layer outputs [n, hidden]; AnyEdit reuses this with keys taken at
        target windows."""
        moments = self.second_moments()
        for _ in range(self.config.passes):
            for i, layer in enumerate(self.layers):
                keys, now = (tensor.double() for tensor in measure(layer))  # [n, in], [n, hidden]
                residual = (goals - now) / (len(self.layers) - i)
                if self.arch.mlp_output_norm(layer) is not None:
                    keys, residual = through_output_norm(self.arch, layer, residual, keys)
                system = self.update_weight(layer) * moments[layer] + keys.T @ keys
                update = residual.T @ torch.linalg.solve(system, keys.T).T  # [out, in]
                writer.add(self.arch.weight_name(layer), self.arch.to_param_layout(update))
                logger.debug("MEMIT layer %d: residual norm %.3f", layer, float(residual.norm(dim=1).mean()))

    def refit(self, writer: WeightWriter, goals_again: Callable[[], tuple[torch.Tensor, int]], measure: Measure, *,
              unit: str) -> None:
        """Step 3 of the module doc, up to ``refits`` rounds: ``goals_again()`` fits the values again on the written
        model and gives the new goals (as for ``spread``) and how many ``unit``s fell short; stops when none did."""
        for _ in range(self.config.refits):
            goals, short = goals_again()
            if not short:
                return
            logger.info("%d %ss short of the stop test after the write; writing again", short, unit)
            self.spread(goals, writer, measure)

    def _values(self, items: Sequence[WeightEdit], desc: str) -> list[ValueFit]:
        fits: list[ValueFit] = []
        size, site, width = self.config.value_batch, self.value_site, self.arch.value_dim(self.layers[-1])
        with tqdm(total=len(items), desc=desc, disable=not self.progress, unit="edit") as bar:
            for at in range(0, len(items), size):
                chunk = items[at: at + size]
                fits += optimise_values(self.model, self.tokenizer, chunk, site, width, self.templates, self.config)
                bar.update(len(chunk))
        return fits

    def goals_with(self, batch: PromptBatch, deltas: PositionDeltas) -> torch.Tensor:
        """The top block's outputs [rows, hidden] at ``batch``'s subject columns with ``deltas`` added at the value
        site: what ``spread`` is to write. Without an output norm that is the outputs now plus δ."""
        outputs = capture(self.model, batch.inputs(), [Probe(self.top)], batch.at_subject,
                          hooks=[(self.value_site, adder(batch.attention_mask, deltas))])
        return outputs[0].double()

    def _write(self, items: list[WeightEdit], writer: WeightWriter) -> list[EditReport]:
        start = time.perf_counter()
        fits = self._values(items, "MEMIT target values")
        # One key column per (edit, template), each asked for the same δ on top of its own top-layer output:
        # the bare prompt's key differs from the prefixed ones (its subject may sit at position 0, with no BOS),
        # and one averaged key per edit left it short of δ (as in ROME, see there).
        rows = [subject_row(self.tokenizer, fill(t, e.template), e.subject) for e in items for t in self.templates]
        every = make_batch(self.tokenizer, rows, fits[0].delta.device)

        def goals(fits: Sequence[ValueFit]) -> torch.Tensor:
            per_row = len(self.templates)
            return self.goals_with(every, [(i, last, fits[i // per_row].delta) for i, (_, last) in enumerate(rows)])

        def measure(layer: int) -> tuple[torch.Tensor, torch.Tensor]:  # one forward for both
            keys, now = capture(self.model, every.inputs(), [Probe(self.arch.mlp_out(layer), "input"), Probe(self.top)],
                                every.at_subject)
            return keys, now

        # The write moves every position the subject's tokens reach, not just the one δ was fitted at, so an
        # edit that met the stop test under the hook can fall short on the written model (a long target loses
        # its last words); δ found again there, from the written weights, aims at what is missing. Edits
        # already there get δ = 0 after one forward pass, and their goal is where they are.
        def goals_again() -> tuple[torch.Tensor, int]:
            again = self._values(items, "MEMIT refit")
            return goals(again), sum(fit.report.steps > 0 for fit in again)

        self.spread(goals(fits), writer, measure)
        self.refit(writer, goals_again, measure, unit="edit")
        logger.info("MEMIT: %d edits into layers %s in %.1f s", len(items), self.layers, time.perf_counter() - start)
        return [fit.report for fit in fits]
