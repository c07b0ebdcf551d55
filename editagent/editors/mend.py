"""MEND: a trained hypernetwork turns the edit's fine-tuning gradient into the weight update (Mitchell et al., 2022,
"Fast Model Editing at Scale", ICLR).

For a linear layer W, the gradient of the edit loss is a sum of rank-1 terms, ∇W = Σ_t δ_t u_tᵀ, with u_t the
layer's input at position t and δ_t the loss gradient at its output. MEND maps each pair (u_t, δ_t) to (ũ_t, δ̃_t)
with a small network g and writes ΔW = −α_l Σ_t δ̃_t ũ_tᵀ, with a learned step α_l per edited layer. g is the paper's
low-rank MLP on the concatenation [u; δ], normalised by running means and standard deviations: two residual layers
of rank r (a ReLU after the first), the second matrix of each starting at zero (identity init), each layer's input
scaled and shifted by parameters of the edited layer it serves (the paper's per-layer "modes", one network shared by
all layers of one shape).

Edited weights: the down projections of the last ``layers`` blocks (the paper's "last MLP layers"; only down
projections, which the model fingerprint leaves out, so saved edits stack). The gradient is taken on the edit
prompt(s) with the teacher-forced target loss (FT-M's), in one forward and backward pass of the unedited model; all
edits of one call are decomposed together, as the paper's batched edits.

Two choices of ours, both keeping the paper's function class:

* the network's output is put back in the input's units, (ũ; δ̃) = (u; δ) + σ ⊙ (g(z) − z) with z the normalised
  input and σ its standard deviation, so that a new network is exactly the identity and an untrained MEND is exactly
  one gradient step of size α (the paper's network outputs normalised units);
* the step is learned as log α, which keeps it positive and lets it move by factors in a short training run.

Training (``editagent.train.mend``, driver ``benchmarks/mend_train.py``) minimises the edit loss after the
update plus c_loc · KL(original ‖ edited) on unrelated prompts, through the update, the base model frozen. A trained
network is saved for one model (its fingerprint, layers and shapes) under ``<cache>/mend/``; ``MEND`` refuses to run
without one, or with one trained for another model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from editagent.editors.arch import ModelArch
from editagent.editors.base import EditReport, WeightEdit, WeightWriter, frozen
from editagent.editors.capture import hidden
from editagent.editors.config import MendConfig
from editagent.editors.editor import Editor
from editagent.editors.finetune import TargetRows, edit_loss, mean_probs, target_logprobs, target_rows
from editagent.editors.prompts import device_of
from editagent.paths import cache_dir as default_cache_dir
from editagent.schema import EditError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "editagent.mend-network/1"
TRAIN_COMMAND = "python benchmarks/mend_train.py --model <name>"
DEFAULT_LAST_LAYERS = 3  # the paper edits the last three MLP layers
_EPS = 1e-7  # the paper's guard on the standard deviation


# -- the hypernetwork ----------------------------------------------------------------------------------------------


class ModeLayer(nn.Module):
    """One residual low-rank layer: x' = x ⊙ s_l + b_l for edited layer l, then x' + act(U V x' + c); U starts at
    zero, so the layer starts as the identity."""

    def __init__(self, width: int, rank: int, n_modes: int, relu: bool) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, width))
        nn.init.xavier_uniform_(self.down)
        self.up = nn.Parameter(torch.zeros(width, rank))
        self.bias = nn.Parameter(torch.zeros(width))
        self.mode_scale = nn.Parameter(torch.ones(n_modes, width))
        self.mode_shift = nn.Parameter(torch.zeros(n_modes, width))
        self.relu = relu

    def forward(self, x: torch.Tensor, mode: int) -> torch.Tensor:
        x = x * self.mode_scale[mode] + self.mode_shift[mode]
        out = F.linear(F.linear(x, self.down), self.up, self.bias)
        return x + (F.relu(out) if self.relu else out)


class MendNetwork(nn.Module):
    """MEND's gradient transform for the down projections of ``layers`` (all of one shape [value_dim, key_dim]).

    ``forward(index, u, delta)`` maps the rank-1 factors of the ``index``-th edited layer, u [T, key_dim] and
    δ [T, value_dim], to (ũ, δ̃); ``update`` gives that layer's ΔW = −α Σ_t δ̃_t ũ_tᵀ in the [out, in] layout. In
    training mode every call first adds its rows to the layer's running mean and variance.
    """

    def __init__(self, layers: Sequence[int], key_dim: int, value_dim: int, rank: int, edit_lr: float) -> None:
        super().__init__()
        if not layers:
            raise EditError("layers: MEND needs at least one layer to edit")
        self.layers = list(layers)
        self.key_dim, self.value_dim = key_dim, value_dim
        width = key_dim + value_dim
        self.rank = min(rank, width)
        n = len(self.layers)
        self.blocks = nn.ModuleList([ModeLayer(width, self.rank, n, relu=True),
                                     ModeLayer(width, self.rank, n, relu=False)])
        self.log_lr = nn.Parameter(torch.full((n,), math.log(edit_lr)))
        self.register_buffer("count", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n, width, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(n, width, dtype=torch.float64))

    @classmethod
    def for_model(cls, arch: ModelArch, layers: Sequence[int], rank: int, edit_lr: float) -> MendNetwork:
        wanted = expected_shape(arch, layers, rank)
        return cls(layers, wanted["key_dim"], wanted["value_dim"], rank, edit_lr)

    def edit_lr(self, index: int) -> torch.Tensor:
        return self.log_lr[index].exp()

    @torch.no_grad()
    def observe(self, index: int, rows: torch.Tensor) -> None:
        """Add ``rows`` [T, width] to layer ``index``'s running mean and sum of squared deviations (Chan et al.)."""
        rows = rows.double()
        n = rows.shape[0]
        if n == 0:
            return
        mean = rows.mean(dim=0)
        m2 = (rows - mean).pow(2).sum(dim=0)
        count = self.count[index]
        total = count + n
        shift = mean - self.mean[index]
        self.mean[index] += shift * (n / total)
        self.m2[index] += m2 + shift.pow(2) * (count * n / total)
        self.count[index] = total

    def moments(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s running mean and standard deviation of [u; δ] (0 and 1 before two rows were seen)."""
        if float(self.count[index]) < 2:
            width = self.key_dim + self.value_dim
            return torch.zeros(width, device=self.mean.device), torch.ones(width, device=self.mean.device)
        std = (self.m2[index] / (self.count[index] - 1)).sqrt()
        return self.mean[index].float(), std.float()

    def forward(self, index: int, u: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([u, delta], dim=-1).float()
        if self.training:
            self.observe(index, x.detach())
        mean, std = self.moments(index)
        z = (x - mean) / (std + _EPS)
        h = z
        for block in self.blocks:
            h = block(h, index)
        out = x + std * (h - z)  # exactly x while the network is the identity
        return out[:, : self.key_dim], out[:, self.key_dim:]

    def update(self, index: int, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """ΔW [value_dim, key_dim] of the ``index``-th layer for the factors ``u``, ``delta``."""
        u_new, delta_new = self(index, u, delta)
        return -self.edit_lr(index) * (delta_new.T @ u_new)

    def describe(self) -> dict[str, Any]:
        return {"layers": self.layers, "key_dim": self.key_dim, "value_dim": self.value_dim, "rank": self.rank}


def expected_shape(arch: ModelArch, layers: Sequence[int], rank: int) -> dict[str, Any]:
    """What ``MendNetwork.describe`` gives for a network editing ``layers`` of this model."""
    shapes = {(arch.key_dim(layer), arch.value_dim(layer)) for layer in layers}
    if len(shapes) != 1:
        raise EditError(f"layers: MEND shares one network across layers of one shape; layers {list(layers)} "
                        f"have down projections of shapes {sorted(shapes)}")
    key_dim, value_dim = shapes.pop()
    return {"layers": list(layers), "key_dim": key_dim, "value_dim": value_dim, "rank": min(rank, key_dim + value_dim)}


# -- checkpoints -----------------------------------------------------------------------------------------------------


def default_layers(arch: ModelArch) -> list[int]:
    """The last ``DEFAULT_LAST_LAYERS`` blocks."""
    return list(range(max(0, arch.n_layers - DEFAULT_LAST_LAYERS), arch.n_layers))


def checkpoint_path(fingerprint: str, layers: Sequence[int], rank: int, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/mend/<fingerprint>-layers<a-b-c>-rank<r>.pt``: where a network trained for that model is kept."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "mend" / f"{fingerprint}-layers{'-'.join(map(str, layers))}-rank{rank}.pt"


def save_network(network: MendNetwork, path: str | Path, fingerprint: str, model_type: str,
                 training: dict[str, Any] | None = None) -> Path:
    """Write ``network`` with the model it belongs to (written to a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "model_type": model_type,
               **network.describe(), "state": {k: v.detach().cpu() for k, v in network.state_dict().items()},
               "training": training or {}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_network(path: str | Path, arch: ModelArch, fingerprint: str, layers: Sequence[int], rank: int
                 ) -> MendNetwork:
    """The network saved at ``path``, checked against this model (fingerprint, layers, shapes and rank)."""
    path = Path(path)
    if not path.is_file():
        raise EditError(f"MEND: no trained hypernetwork at {path} for this {arch.model_type} model (fingerprint "
                        f"{fingerprint[:16]}, layers {list(layers)}, rank {rank}); train one with: {TRAIN_COMMAND} "
                        f"--layers {' '.join(map(str, layers))} --rank {rank} (it saves to that path), or pass "
                        "MendConfig(checkpoint=...)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise EditError(f"MEND checkpoint {path}: not a MEND network (expected format {CHECKPOINT_FORMAT!r})")
    if saved["fingerprint"] != fingerprint:
        raise EditError(f"MEND checkpoint {path}: trained for another model (fingerprint {saved['fingerprint'][:16]}, "
                        f"{saved.get('model_type')}), but this {arch.model_type} model's fingerprint is "
                        f"{fingerprint[:16]}; a hypernetwork only edits the model it was trained on: train one for "
                        f"this model with {TRAIN_COMMAND}")
    wanted = expected_shape(arch, layers, rank)
    found = {key: saved.get(key) for key in wanted}
    if wanted != found:
        raise EditError(f"MEND checkpoint {path}: trained for {found}, but this editor edits {wanted}; set "
                        "MendConfig(layers=..., rank=...) to the checkpoint's, or train one for these settings")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's generator alone
        network = MendNetwork.for_model(arch, layers, rank, edit_lr=1.0)
    network.load_state_dict(saved["state"])
    return network


# -- the gradient's rank-1 factors -----------------------------------------------------------------------------------


@dataclass
class Factors:
    """Per edited layer, the down projection's inputs u [T, key_dim] and the loss gradient at its outputs
    δ [T, value_dim] at every position where both are non-zero (∇W = Σ_t δ_t u_tᵀ), from one forward and backward
    pass of the edit loss; ``logprobs``: each row's target-token log-probabilities in that pass (detached)."""

    inputs: dict[int, torch.Tensor]
    grads: dict[int, torch.Tensor]
    loss: float
    logprobs: list[torch.Tensor]


def gradient_factors(model: nn.Module, arch: ModelArch, rows: TargetRows, layers: Sequence[int]) -> Factors:
    """The rank-1 factors of the edit loss's gradient for the down projections of ``layers`` (weights untouched)."""
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def catch(layer: int) -> Any:
        def read(_module: nn.Module, args: Any, output: Any) -> Any:
            states = hidden(output)
            if not states.requires_grad:  # the weights are frozen: the graph starts at the lowest edited layer
                states = states.detach().requires_grad_(True)
            inputs[layer], outputs[layer] = args[0].detach(), states
            return (states, *output[1:]) if isinstance(output, tuple) else states
        return read

    handles = [arch.mlp_out(layer).register_forward_hook(catch(layer)) for layer in layers]
    try:
        with frozen(model), torch.enable_grad():
            logits = rows.logits(model)
            logprobs = target_logprobs(logits, rows.targets)
            loss = edit_loss(logits, rows, logprobs, "target")
            grads = torch.autograd.grad(loss, [outputs[layer] for layer in layers])
    finally:
        for handle in handles:
            handle.remove()
    mask = rows.attention_mask.bool()
    factors_in, factors_grad = {}, {}
    for layer, grad in zip(layers, grads, strict=True):
        u, delta = inputs[layer][mask].float(), grad[mask].float()
        keep = (u != 0).any(dim=-1) & (delta != 0).any(dim=-1)  # as the paper: rows without gradient carry nothing
        factors_in[layer], factors_grad[layer] = u[keep], delta[keep]
    return Factors(factors_in, factors_grad, float(loss.detach()), [row.detach() for row in logprobs])


def updates(network: MendNetwork, factors: Factors) -> dict[int, torch.Tensor]:
    """Per edited layer, ΔW [value_dim, key_dim] (float32)."""
    return {layer: network.update(index, factors.inputs[layer], factors.grads[layer])
            for index, layer in enumerate(network.layers)}


# -- the editor ------------------------------------------------------------------------------------------------------


class MEND(Editor):
    """MEND (see the module doc); ``compute``/``apply`` as every ``Editor``. Needs a network trained for this model:
    from ``config.checkpoint``, the cache (``checkpoint_path``), or given as ``network``."""

    method = "mend"
    config_type = MendConfig
    config: MendConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: MendConfig | dict[str, Any] | None = None, *,
                 network: MendNetwork | None = None, **options: Any) -> None:
        super().__init__(model, tokenizer, config, **options)
        self.layers = self.arch.check_layers(self.config.layers, default_layers(self.arch))
        if network is not None:
            wanted = expected_shape(self.arch, self.layers, self.config.rank)
            if network.describe() != wanted:
                raise EditError(f"network: built for {network.describe()}, but this editor edits {wanted}")
            network = network.to(device_of(model)).eval()
        self.network = network

    @property
    def checkpoint(self) -> Path:
        """Where the trained network is read from."""
        if self.config.checkpoint is not None:
            return Path(self.config.checkpoint).expanduser()
        return checkpoint_path(self.fingerprint, self.layers, self.config.rank, self.cache_dir)

    def load_statistics(self) -> None:
        """Load the trained hypernetwork (once per editor)."""
        if self.network is None:
            network = load_network(self.checkpoint, self.arch, self.fingerprint, self.layers, self.config.rank)
            self.network = network.to(device_of(self.model)).eval()
            logger.info("MEND: hypernetwork for layers %s from %s", self.layers, self.checkpoint)

    def _write(self, items: list[WeightEdit], writer: WeightWriter) -> list[EditReport]:
        start = time.perf_counter()
        assert self.network is not None  # load_statistics ran
        rows = target_rows(self.tokenizer, items, self.templates, device_of(self.model))
        factors = gradient_factors(self.model, self.arch, rows, self.layers)
        before = mean_probs(factors.logprobs, rows.owner, len(items))
        with torch.no_grad():
            for layer, change in updates(self.network, factors).items():
                writer.add(self.arch.weight_name(layer), self.arch.to_param_layout(change))
            logits = rows.logits(self.model)
        after = mean_probs(target_logprobs(logits, rows.targets), rows.owner, len(items))
        seconds = (time.perf_counter() - start) / len(items)
        logger.info("MEND layers %s: %d edits, %.2f s/edit, target p %.2f -> %.2f", self.layers, len(items), seconds,
                    sum(before) / len(items), sum(after) / len(items))
        return [EditReport(subject=edit.subject, target=edit.target, steps=1, prob_before=before[i],
                           prob_after=after[i], seconds=seconds) for i, edit in enumerate(items)]
