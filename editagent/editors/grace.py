"""GRACE: edits kept in a discrete key-value codebook beside one layer, never in the weights (Hartvigsen et al.,
2023, "Aging with GRACE: Lifelong Model Editing with Discrete Key-Value Adaptors").

The codebook sits on one MLP down projection (as EasyEdit wraps LLaMA's ``down_proj``). Each entry holds a key (the
projection's input at one token), a value (what the projection outputs there instead), a deferral radius and a
label (the token the value makes the model predict). At every token of every forward pass, the input is compared
with the keys (Euclidean distance); where it lies within an entry's radius, the output is replaced by that entry's
value (by the nearest such entry's), and elsewhere left exactly as it was.

An edit adds one entry per target token: the key at the prompt's last token, whose value makes the model say the
first target token, then the key at each target token but the last (teacher-forced), whose value makes it say the
next one; so a multi-token target comes out whole in greedy decoding, which checks each new token as it comes. The
values start from the outputs they replace and are trained together with Adam (in units of each output's rms, so
the step suits any model's scale) until greedy decoding gives every target by ``stop_margin`` logits. Keys at one
layer do not depend on that layer's replacements, so they are the same while training and at inference.

Radii: each key starts with ε · ‖key‖ (GRACE's ε is absolute, set for one model's activations). Where a newer
entry with a different label lies closer than two radii, the older entry's radius shrinks to half their distance
(GRACE's split; the paper halves both, keeping the newer whole lets a re-edit of the same prompt override the old
answer instead of silencing both). Radii are recomputed from the entries present, so removing an edit's entries
gives its neighbours back their radii exactly. GRACE also grows a neighbour's radius to cover a new key with the same
label instead of adding one; here every edit adds its own entries, so that undo removes exactly what it added.

How it fits ``Deltas`` / ``AppliedEdit``: ``compute`` gives a ``CodebookDeltas`` (a ``Deltas`` with no weight
deltas, plus the entries), ``apply``/``apply_deltas`` install them on the model's codebook for that layer (one
forward hook per down projection, registered with the first entry) and return a ``CodebookEdit``, whose ``undo``
removes its entries, and the hook with the last one. The model's parameters never change, so the fingerprint stays
the same; with every entry removed the forward pass is bit-identical to the unedited one. Undo order does not
matter. ``save``/``apply_deltas`` use their own format, checked against the same fingerprint.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from editagent.editors.arch import ModelArch
from editagent.editors.base import AppliedEdit, Deltas, EditReport, WeightEdit, as_edits, frozen
from editagent.editors.capture import Probe, capture, hidden
from editagent.editors.config import GraceConfig
from editagent.editors.editor import Editor
from editagent.editors.finetune import greedy_margins, mean_probs, target_logprobs, target_rows
from editagent.editors.prompts import device_of
from editagent.models import bump_weights_version
from editagent.schema import EditError

logger = logging.getLogger(__name__)

SAVED_FORMAT = "editagent.grace-codebook/1"  # listed in ``base.OTHER_SAVED_FORMATS``
# GRACE edits GPT-2 XL's layer 35 of 48 (EasyEdit: the last layer of LLaMA); a late layer's keys tell prompts apart.
GRACE_DEPTH = 0.75


def _empty() -> torch.Tensor:
    return torch.empty(0)


@dataclass(frozen=True)
class CodebookDeltas(Deltas):
    """GRACE's computed edit: no weight deltas (``deltas`` is empty) but codebook entries for the down projection of
    ``layer``: ``keys`` [n, key_dim] and ``radii`` [n] in float32, ``values`` [n, value_dim] in the weight's dtype,
    ``labels`` [n] (the token each value makes the model predict). ``write`` installs them."""

    layer: int = 0
    keys: torch.Tensor = field(default_factory=_empty)
    values: torch.Tensor = field(default_factory=_empty)
    radii: torch.Tensor = field(default_factory=_empty)
    labels: torch.Tensor = field(default_factory=_empty)

    def write(self, model: nn.Module) -> CodebookEdit:
        """Install the entries on ``model``'s codebook at ``layer`` (checks that they fit that layer)."""
        arch = ModelArch(model)
        layer = arch.check_layer(self.layer, "layer")
        n = len(self.keys)
        if (self.keys.shape != (n, arch.key_dim(layer)) or self.values.shape != (n, arch.value_dim(layer))
                or self.radii.shape != (n,) or self.labels.shape != (n,)):
            raise EditError(f"saved: codebook entries {tuple(self.keys.shape)} -> {tuple(self.values.shape)} do not "
                            f"fit layer {layer} of this model")
        weight = arch.weight(layer)
        entries = Entries(self.keys.to(weight.device, torch.float32), self.values.to(weight.device, weight.dtype),
                          self.radii.to(weight.device, torch.float32), self.labels.to(weight.device, torch.long))
        codebook = Codebook.on(arch.mlp_out(layer))
        codebook.add(entries)
        bump_weights_version(model)
        return CodebookEdit(model, self, codebook, entries)

    def saved(self) -> dict[str, Any]:
        return {"format": SAVED_FORMAT, "method": self.method, "fingerprint": self.fingerprint,
                "edits": [edit.model_dump() for edit in self.edits], "layer": self.layer,
                "keys": self.keys.cpu(), "values": self.values.cpu(), "radii": self.radii.cpu(),
                "labels": self.labels.cpu()}


def load_saved(saved: Mapping[str, Any]) -> CodebookDeltas:
    """A saved GRACE edit (``CodebookEdit.saved()``) as ``CodebookDeltas``; ``base.apply_deltas`` calls this."""
    missing = [name for name in ("fingerprint", "layer", "keys", "values", "radii", "labels") if name not in saved]
    if missing:
        raise EditError(f"saved: GRACE edit without {', '.join(missing)}; save edits with AppliedEdit.save(path)")
    if not all(isinstance(saved[name], torch.Tensor) for name in ("keys", "values", "radii", "labels")):
        raise EditError("saved: GRACE keys, values, radii and labels must be tensors")
    edits = [WeightEdit.model_validate(edit) for edit in saved.get("edits", [])]
    return CodebookDeltas(str(saved.get("method", "grace")), str(saved["fingerprint"]), edits, {}, [],
                          layer=int(saved["layer"]), keys=saved["keys"], values=saved["values"],
                          radii=saved["radii"], labels=saved["labels"])


@dataclass(eq=False)
class Entries:
    """One edit's installed entries (compared by identity: undo removes exactly these)."""

    keys: torch.Tensor
    values: torch.Tensor
    radii: torch.Tensor
    labels: torch.Tensor


_CODEBOOKS: weakref.WeakKeyDictionary[nn.Module, Codebook] = weakref.WeakKeyDictionary()


class Codebook:
    """The entries installed on one down projection and the forward hook that reads them; the hook is registered
    with the first entry and removed with the last. Holds no reference to the module, which it must not outlive."""

    def __init__(self, module: nn.Module) -> None:
        self._module = weakref.ref(module)
        self.groups: list[Entries] = []
        self._handle = module.register_forward_hook(self._replace)
        self.keys = self.values = self.radii = torch.empty(0)

    @classmethod
    def on(cls, module: nn.Module) -> Codebook:
        """The codebook of ``module``, created (and its hook registered) if it has none."""
        if module not in _CODEBOOKS:
            _CODEBOOKS[module] = cls(module)
        return _CODEBOOKS[module]

    @classmethod
    def of(cls, module: nn.Module) -> Codebook | None:
        return _CODEBOOKS.get(module)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, entries: Entries) -> None:
        self.groups.append(entries)
        self._stack()

    def remove(self, entries: Entries) -> None:
        self.groups = [group for group in self.groups if group is not entries]
        if self.groups:
            self._stack()
            return
        self._handle.remove()
        module = self._module()
        if module is not None and _CODEBOOKS.get(module) is self:
            del _CODEBOOKS[module]

    def _stack(self) -> None:
        """Stack the entries newest first (the newest wins a tie) and derive each one's radius from the others."""
        newest_first = list(reversed(self.groups))
        self.keys = torch.cat([group.keys.flip(0) for group in newest_first])
        self.values = torch.cat([group.values.flip(0) for group in newest_first])
        labels = torch.cat([group.labels.flip(0) for group in newest_first])
        radii = torch.cat([group.radii.flip(0) for group in newest_first])
        distances = torch.cdist(self.keys, self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        n = len(labels)
        newer = torch.ones(n, n, dtype=torch.bool, device=labels.device).tril(-1)  # [i, j]: j is newer than i
        conflict = newer & (labels[:, None] != labels[None, :])
        self.radii = torch.minimum(radii, torch.where(conflict, distances / 2, torch.inf).min(dim=1).values)

    def _replace(self, _module: nn.Module, args: Any, output: Any) -> Any:
        """Replace the output at every token whose input lies within an entry's radius (None: output unchanged)."""
        inputs, states = args[0], hidden(output)
        queries = inputs.reshape(-1, inputs.shape[-1]).float()
        distances = torch.cdist(queries, self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        distances = distances.masked_fill(distances > self.radii, torch.inf)
        best, nearest = distances.min(dim=1)
        hit = torch.isfinite(best)
        if not bool(hit.any()):
            return None
        flat = states.reshape(-1, states.shape[-1]).clone()
        flat[hit] = self.values[nearest[hit]].to(flat.dtype)
        replaced = flat.view_as(states)
        return (replaced, *output[1:]) if isinstance(output, tuple) else replaced


class CodebookEdit(AppliedEdit):
    """A GRACE edit installed on a model: ``undo`` removes its entries (in any order, exactly), ``save`` writes them
    for ``apply_deltas``. It changes no parameter, so ``originals`` and ``deltas`` are empty."""

    def __init__(self, model: nn.Module, deltas: CodebookDeltas, codebook: Codebook, entries: Entries) -> None:
        super().__init__(model, method=deltas.method, edits=deltas.edits, fingerprint=deltas.fingerprint,
                         originals={}, reports=deltas.reports)
        self.layer = deltas.layer
        self.codebook = codebook
        self.entries = entries
        self._deltas = deltas

    def undo(self) -> None:
        """Remove this edit's entries from the codebook (and the hook with the last entry)."""
        if self.undone:
            logger.warning("%s edit already undone; nothing to do", self.method)
            return
        self.codebook.remove(self.entries)
        bump_weights_version(self.model)
        self.undone = True

    def saved(self) -> dict[str, Any]:
        return self._deltas.saved()

    def __repr__(self) -> str:
        state = "undone" if self.undone else "applied"
        return f"CodebookEdit({self.method}, {len(self.edits)} edits, {len(self.entries.keys)} entries, {state})"


class GRACE(Editor):
    """GRACE on one down projection: ``compute(edits)`` trains the values of their codebook entries and gives a
    ``CodebookDeltas``, leaving the model as it was; ``apply(edits)`` installs them (see the module doc)."""

    method = "grace"
    config_type = GraceConfig
    config: GraceConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: GraceConfig | dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        last = self.arch.n_layers - 1
        self.layer = self.arch.check_layer(self.config.layer, "layer", min(last, round(GRACE_DEPTH * last)))

    def compute(self, edits: Any) -> CodebookDeltas:
        """The codebook entries that make the model say each edit's target; the model is left as it was (only hooks
        come and go while the values are trained)."""
        start = time.perf_counter()
        items = as_edits(edits, WeightEdit)
        config, arch, module = self.config, self.arch, self.arch.mlp_out(self.layer)
        rows = target_rows(self.tokenizer, items, self.templates, device_of(self.model))
        keys, init = (found.float() for found in capture(  # [sites, key_dim], [sites, value_dim]
            self.model, rows.inputs(), [Probe(module, "input"), Probe(module)], lambda t: torch.cat(rows.at_sites(t))))
        scale = init.norm(dim=1, keepdim=True) / init.shape[1] ** 0.5  # rms of each replaced output
        theta = torch.zeros_like(init, requires_grad=True)
        optimiser = torch.optim.Adam([theta], lr=config.lr)
        row_index = torch.tensor([row for row, cols in enumerate(rows.sites) for _ in cols], device=init.device)
        col_index = torch.tensor([col for cols in rows.sites for col in cols], device=init.device)

        def replace(_module: nn.Module, _args: Any, output: Any) -> Any:
            states = hidden(output).clone()
            states[row_index, col_index] = (init + scale * theta).to(states.dtype)
            return (states, *output[1:]) if isinstance(output, tuple) else states

        steps, before, after = 0, None, None
        handle = module.register_forward_hook(replace)
        try:
            with frozen(self.model), torch.enable_grad():
                for step in range(config.steps + 1):
                    logits = rows.logits(self.model)
                    logprobs = target_logprobs(logits, rows.targets)
                    after = mean_probs(logprobs, rows.owner, len(items))
                    if before is None:
                        before = after
                    steps = step
                    if step == config.steps or bool((greedy_margins(logits, rows.targets)
                                                      >= config.stop_margin).all()):
                        break
                    (-torch.stack([row.mean() for row in logprobs]).mean()).backward()
                    optimiser.step()
                    optimiser.zero_grad()
        finally:
            handle.remove()
        assert before is not None and after is not None
        weight = arch.weight(self.layer)
        values = (init + scale * theta).detach().to(weight.dtype)
        seconds = (time.perf_counter() - start) / len(items)
        logger.info("GRACE layer %d: %d edits, %d entries in %d steps, %.1f s/edit, target p %.2f -> %.2f",
                    self.layer, len(items), len(keys), steps, seconds, sum(before) / len(items),
                    sum(after) / len(items))
        reports = [EditReport(subject=edit.subject, target=edit.target, steps=steps, prob_before=before[i],
                              prob_after=after[i], seconds=seconds) for i, edit in enumerate(items)]
        return CodebookDeltas(self.method, self.fingerprint, items, {}, reports, layer=self.layer, keys=keys,
                              values=values, radii=config.epsilon * keys.norm(dim=1),
                              labels=torch.cat(rows.targets))

    def apply(self, edits: Any) -> CodebookEdit:
        """Compute the entries of ``edits`` and install them; ``handle.undo()`` removes them again."""
        return self.compute(edits).write(self.model)
