"""Reading activations: what a module takes in or gives out, from one forward pass cut short once all is read.

    keys, outputs = capture(model, batch.inputs(), [Probe(down_proj, "input"), Probe(block)], batch.at_subject)

Every editor reads keys (a down projection's input) and outputs (a block's or a down projection's output) through
``capture``; ``adder`` makes the hook that adds chosen vectors at chosen positions of a module's output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

ForwardHook = Callable[[nn.Module, Any, Any], Any]
PositionDeltas = Sequence[tuple[int, int, torch.Tensor]]  # (row, position in the row's own ids, vector to add)


class StopForward(Exception):
    """Raised by a hook once everything needed has been read: the rest of the model is not run."""


class Probe(NamedTuple):
    """A module, and whether to read its input or its output."""

    module: nn.Module
    read: Literal["input", "output"] = "output"


def hidden(output: Any) -> torch.Tensor:
    """The hidden states of a module's output (blocks return a tuple, projections a tensor)."""
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def capture(model: nn.Module, inputs: Mapping[str, torch.Tensor], probes: Sequence[Probe],
            pick: Callable[[torch.Tensor], torch.Tensor], *,
            hooks: Sequence[tuple[nn.Module, ForwardHook]] = ()) -> list[torch.Tensor]:
    """Each probe's module input or output, [rows, columns, dim] passed through ``pick`` (e.g. the subject's
    columns, ``PromptBatch.at_subject``), from one forward pass on ``inputs`` that stops once every probe has been
    read. ``hooks``: forward hooks registered first, so a probe on the same module reads what they return."""
    caught: dict[int, torch.Tensor] = {}

    def reader(i: int, probe: Probe) -> ForwardHook:
        def hook(_module: nn.Module, args: Any, output: Any) -> None:
            caught[i] = pick(args[0] if probe.read == "input" else hidden(output)).detach()
            if len(caught) == len(probes):
                raise StopForward
        return hook

    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    handles += [probe.module.register_forward_hook(reader(i, probe)) for i, probe in enumerate(probes)]
    try:
        model(**inputs, use_cache=False)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return [caught[i] for i in range(len(probes))]


def adder(mask: torch.Tensor, deltas: PositionDeltas) -> ForwardHook:
    """A forward hook adding each vector at its (row, position) of a left-padded batch with ``mask``."""
    pads = (mask.shape[1] - mask.sum(dim=1)).tolist()

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        states = hidden(output).clone()
        for row, position, delta in deltas:
            states[row, pads[row] + position] += delta.to(states.dtype)
        return (states, *output[1:]) if isinstance(output, tuple) else states

    return hook
