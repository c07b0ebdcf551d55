"""Where each architecture keeps the parts weight editing touches.

Editing code never names a module path: it asks ``ModelArch``. Adding an architecture is one
``ArchSpec`` entry in ``ARCH_SPECS`` (or a ``register_arch`` call), keyed by ``model.config.model_type``.

The edited matrix is the MLP's down projection: its input is the *key* (the MLP's hidden activation)
and its output the *value* the MLP writes into the residual stream. Edits are computed in the
``nn.Linear`` layout ``[out, in]``; ``ModelArch.to_param_layout`` turns them into GPT-2's ``Conv1D``
layout ``[in, out]`` where needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from editagent.schema import EditError


class UnsupportedArchitecture(EditError):
    """The model's ``config.model_type`` has no entry in ``ARCH_SPECS``; the message says how to add one."""


@dataclass(frozen=True)
class ArchSpec:
    """Dotted attribute paths for one architecture, plus default edit depths.

    ``blocks``, ``final_norm`` and ``unembed`` are paths from the model root; ``mlp_in`` and ``mlp_out``
    are paths inside one block. Depths are fractions of the number of blocks: ROME edits one early-middle
    layer, MEMIT a range of early-middle layers (as in the ROME and MEMIT papers: GPT-J layer 5 of 28 and
    layers 3-8; GPT-2 XL layer 17 of 48 and layers 13-17).
    """

    blocks: str
    mlp_in: str
    mlp_out: str
    final_norm: str
    unembed: str
    conv1d: bool = False  # GPT-2 ``Conv1D`` stores its weight as [in, out]; ``nn.Linear`` as [out, in]
    mlp_output_norm: str | None = None  # an RMSNorm inside the block between the MLP's output and the residual stream
    rome_depth: float = 0.2
    memit_depth: tuple[float, float] = (0.12, 0.28)


_LLAMA_LIKE = ArchSpec(blocks="model.layers", mlp_in="mlp.up_proj", mlp_out="mlp.down_proj",
                       final_norm="model.norm", unembed="lm_head")

ARCH_SPECS: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,  # also SmolLM/SmolLM2
    "qwen2": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    # Gemma3ForCausalLM (the text-only model); its MLP output is normalised before it joins the residual stream.
    # MEMIT writes only the top layer of the usual range: each lower layer's write, linearised through its norm,
    # disturbs more than it adds (docs/decisions.md).
    "gemma3_text": dataclasses.replace(_LLAMA_LIKE, mlp_output_norm="post_feedforward_layernorm",
                                       memit_depth=(0.28, 0.28)),
    "gpt2": ArchSpec(blocks="transformer.h", mlp_in="mlp.c_fc", mlp_out="mlp.c_proj", final_norm="transformer.ln_f",
                     unembed="lm_head", conv1d=True, rome_depth=0.35, memit_depth=(0.27, 0.35)),
    "gptj": ArchSpec(blocks="transformer.h", mlp_in="mlp.fc_in", mlp_out="mlp.fc_out", final_norm="transformer.ln_f",
                     unembed="lm_head", rome_depth=0.18, memit_depth=(0.11, 0.29)),
    "gpt_neox": ArchSpec(blocks="gpt_neox.layers", mlp_in="mlp.dense_h_to_4h", mlp_out="mlp.dense_4h_to_h",
                         final_norm="gpt_neox.final_layer_norm", unembed="lm_head"),
}


def register_arch(model_type: str, spec: ArchSpec) -> None:
    """Teach the editors a new architecture (or override one); ``model_type`` as in ``model.config.model_type``."""
    ARCH_SPECS[model_type] = spec


def model_type_of(model: Any) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise UnsupportedArchitecture("model: expected a Hugging Face model with config.model_type, got "
                                      f"{type(model).__name__}")
    return model_type


def spec_for(model: Any) -> ArchSpec:
    """The ``ArchSpec`` for ``model``, or an error naming its ``model_type`` and how to add it."""
    model_type = model_type_of(model)
    spec = ARCH_SPECS.get(model_type)
    if spec is None:
        raise UnsupportedArchitecture(
            f"model.config.model_type {model_type!r} has no weight-editing adapter (supported: "
            f"{', '.join(sorted(ARCH_SPECS))}). Add one with editagent.editors.register_arch({model_type!r}, "
            "ArchSpec(blocks='model.layers', mlp_in='mlp.up_proj', mlp_out='mlp.down_proj', final_norm='model.norm', "
            "unembed='lm_head')), using the module paths printed by print(model)")
    return spec


def _resolve(root: nn.Module, path: str, model_type: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        if not hasattr(obj, part):
            raise UnsupportedArchitecture(f"model_type {model_type!r}: no module at {path!r} (missing {part!r} in "
                                          f"{type(obj).__name__}); fix its ArchSpec via register_arch")
        obj = getattr(obj, part)
    return obj


def _depth_to_layer(fraction: float, n_layers: int) -> int:
    return min(n_layers - 1, max(0, round(fraction * (n_layers - 1))))


class ModelArch:
    """The editable parts of one loaded model, resolved once from its ``ArchSpec``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.model_type = model_type_of(model)
        self.spec = spec_for(model)
        self.blocks: nn.ModuleList = _resolve(model, self.spec.blocks, self.model_type)
        if not isinstance(self.blocks, nn.ModuleList) or len(self.blocks) == 0:
            raise UnsupportedArchitecture(f"model_type {self.model_type!r}: {self.spec.blocks!r} is not a non-empty "
                                          "ModuleList of transformer blocks; fix its ArchSpec via register_arch")
        self.final_norm: nn.Module = _resolve(model, self.spec.final_norm, self.model_type)
        self.unembed: nn.Module = _resolve(model, self.spec.unembed, self.model_type)
        for layer in range(len(self.blocks)):  # fail now, not halfway through an edit
            self.mlp_in(layer)
            self.mlp_out(layer)
            self.mlp_output_norm(layer)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def check_layer(self, layer: int | None, field: str = "layer", default: int | None = None) -> int:
        """A config's layer (``default`` when None), checked; the error names ``field``."""
        if layer is None:
            if default is None:
                raise EditError(f"{field}: give a layer number (0..{self.n_layers - 1})")
            layer = default
        if not 0 <= layer < self.n_layers:
            raise EditError(f"{field}: {layer} is out of range; this {self.model_type} model has layers "
                            f"0..{self.n_layers - 1}")
        return layer

    def check_layers(self, layers: Sequence[int] | None, default: Sequence[int]) -> list[int]:
        """A config's ``layers`` (``default`` when None), each checked; errors name the ``layers`` field."""
        return [self.check_layer(layer, "layers") for layer in (default if layers is None else layers)]

    def block(self, layer: int) -> nn.Module:
        return self.blocks[self.check_layer(layer)]

    def mlp_in(self, layer: int) -> nn.Module:
        return _resolve(self.block(layer), self.spec.mlp_in, self.model_type)

    def mlp_out(self, layer: int) -> nn.Module:
        """The down projection: input = key, output = value added to the residual stream."""
        return _resolve(self.block(layer), self.spec.mlp_out, self.model_type)

    def mlp_output_norm(self, layer: int) -> nn.Module | None:
        """The norm between the MLP's output and the residual stream (Gemma 3), or None where the output is added."""
        if self.spec.mlp_output_norm is None:
            return None
        return _resolve(self.block(layer), self.spec.mlp_output_norm, self.model_type)

    @torch.no_grad()
    def output_divisor(self, layer: int, outputs: torch.Tensor) -> torch.Tensor | None:
        """What the norm after the MLP (``mlp_output_norm``) divides each output y [..., value_dim] by: rms(y), or
        √(mean(y²) + ε) where ε matters, read from the module as ‖g ⊙ y‖ / ‖norm(y)‖ with g its gain; shape [...].
        None where the MLP output is added as it is."""
        norm = self.mlp_output_norm(layer)
        if norm is None:
            return None
        gain = self.output_gain(layer).to(outputs)
        return (outputs * gain).norm(dim=-1) / norm(outputs).norm(dim=-1).clamp_min(torch.finfo(outputs.dtype).tiny)

    @torch.no_grad()
    def output_gain(self, layer: int) -> torch.Tensor:
        """The gain g [value_dim] of the RMSNorm after the MLP, read generically as ``norm(1)``."""
        norm = self.mlp_output_norm(layer)
        if norm is None:
            raise EditError(f"layer {layer}: this {self.model_type} model adds its MLP output without a norm")
        weight = self.weight(layer)
        return norm(torch.ones(1, self.value_dim(layer), dtype=weight.dtype, device=weight.device))[0]

    def weight_name(self, layer: int) -> str:
        """The down projection weight's name in ``model.named_parameters()``."""
        return f"{self.spec.blocks}.{self.check_layer(layer)}.{self.spec.mlp_out}.weight"

    def weight(self, layer: int) -> nn.Parameter:
        return self.mlp_out(layer).weight

    def key_dim(self, layer: int) -> int:
        weight = self.weight(layer)
        return int(weight.shape[0] if self.spec.conv1d else weight.shape[1])

    def value_dim(self, layer: int) -> int:
        """Width of the down projection's output, which is also the residual stream's width."""
        weight = self.weight(layer)
        return int(weight.shape[1] if self.spec.conv1d else weight.shape[0])

    def to_param_layout(self, delta: torch.Tensor) -> torch.Tensor:
        """An update given as [out, in] in the layout the down projection stores its weight."""
        return delta.T if self.spec.conv1d else delta

    def edited_weight_names(self) -> set[str]:
        """Every weight an editor may write; the model fingerprint leaves these out."""
        return {self.weight_name(layer) for layer in range(self.n_layers)}

    @property
    def rome_layer(self) -> int:
        return _depth_to_layer(self.spec.rome_depth, self.n_layers)

    @property
    def memit_layers(self) -> list[int]:
        low, high = (_depth_to_layer(f, self.n_layers) for f in self.spec.memit_depth)
        return list(range(low, max(low, high) + 1))
