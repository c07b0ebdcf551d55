"""Shared pieces of weight editing: the request record, computed deltas, the reversible handle and the model
fingerprint.

An editor first computes ``Deltas`` (what each weight gains), leaving the model as it was; writing them
(``apply_deltas``, or the editor's ``apply``) returns an ``AppliedEdit`` holding a clone of each weight it touched,
so ``undo`` puts the exact original tensors back. A handle's deltas can be saved with ``handle.save(path)`` and
applied later with ``apply_deltas``, which refuses a model whose fingerprint differs from the one the edit was
computed on. An edit that is not a weight change (GRACE's codebook) is a ``Deltas`` subtype that writes itself
(``Deltas.write``) and saves in a format of its own (``OTHER_SAVED_FORMATS``).

Undo order: handles are meant to be undone last-in, first-out. Undoing an older handle after a newer
edit touched the same weights still restores exactly the tensors from before the older edit, which also
discards the newer edit's change to those weights (a warning says so); undoing the newer handle after
that would bring the older edit back.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from editagent.editors.arch import ModelArch
from editagent.models import bump_weights_version
from editagent.schema import MAX_ENTITY_CHARS, MAX_SENTENCE_CHARS, EditError, clean_text

logger = logging.getLogger(__name__)

SAVED_FORMAT = "editagent.weight-edit/2"  # /2: sparse deltas keep only their non-zero rows or columns
READABLE_FORMATS = ("editagent.weight-edit/1", SAVED_FORMAT)
# Saved edits that are not weight deltas: format -> the module whose ``load_saved(saved) -> Deltas`` reads them.
OTHER_SAVED_FORMATS = {"editagent.grace-codebook/1": "editagent.editors.grace"}
_SAMPLES_PER_TENSOR = 2048
# Runtime switches and bookkeeping that do not change what the model computes.
_VOLATILE_CONFIG = {"transformers_version", "use_cache", "dtype", "torch_dtype", "output_attentions",
                    "output_hidden_states", "return_dict", "architectures", "name_or_path"}


class FingerprintMismatch(EditError):
    """A saved edit was computed on a different model; the message names both fingerprints."""


class PromptedEdit(BaseModel):
    """A prompt that names ``subject``: what every weight edit, short or long, is written behind.

    ``prompt`` holds the subject verbatim ("The Eiffel Tower is located in the city of") or a ``{}``
    where it goes ("{} is located in the city of").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    subject: str

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> str:
        return clean_text("prompt", value, MAX_SENTENCE_CHARS)

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, value: Any) -> str:
        return clean_text("subject", value, MAX_ENTITY_CHARS)

    @model_validator(mode="after")
    def _subject_in_prompt(self) -> Self:
        if "{}" not in self.prompt and self.subject not in self.prompt:
            raise EditError(f"prompt: {self.prompt!r} does not contain the subject {self.subject!r}; write the "
                            "subject inside the prompt verbatim, or put '{}' where it goes")
        return self

    @property
    def template(self) -> str:
        """The prompt with ``{}`` in place of (the first mention of) the subject."""
        return self.prompt if "{}" in self.prompt else self.prompt.replace(self.subject, "{}", 1)

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return fill(self.template, self.subject)


class WeightEdit(PromptedEdit):
    """One fact to write into the weights: ``prompt`` continues with ``target``, and names ``subject``.

    ``target`` continues the prompt as a new word: a leading space is added when it has none (" Rome", as
    tokenizers spell a word after a space).
    """

    target: str

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> str:
        return " " + clean_text("target", value, MAX_ENTITY_CHARS)


def fill(template: str, subject: str) -> str:
    """``template`` with its first ``{}`` replaced by ``subject`` (not ``str.format``: prompts may hold braces)."""
    head, _, tail = template.partition("{}")
    return head + subject + tail


class EditReport(BaseModel):
    """How the target-value optimisation of one edit went: probabilities are mean target-token probabilities."""

    subject: str
    target: str
    steps: int
    prob_before: float
    prob_after: float
    seconds: float


Request = TypeVar("Request", bound=PromptedEdit)


def as_edits(edits: Any, kind: type[Request] = WeightEdit) -> list[Request]:  # type: ignore[assignment]
    """One edit or many, as ``kind`` records (``WeightEdit`` unless given; dicts are validated)."""
    items = [edits] if isinstance(edits, PromptedEdit | Mapping) else list(edits)
    if not items:
        raise EditError(f"edits: empty; pass at least one {kind.__name__}(prompt=..., subject=..., target=...)")
    return [item if isinstance(item, kind) else kind.model_validate(item) for item in items]


def model_fingerprint(model: nn.Module, arch: ModelArch | None = None) -> str:
    """A sha256 over the model type, its config and a strided sample of every weight editors never write.

    The down projections are left out, so the fingerprint stays the same after edits and a saved edit
    can be stacked on an edited model; any other difference in weights or config changes it. It reads
    at most a few thousand values per tensor, well under a second on a 135M-parameter model.
    """
    arch = arch or ModelArch(model)
    skip = arch.edited_weight_names()
    digest = hashlib.sha256(arch.model_type.encode())
    config = {key: value for key, value in model.config.to_dict().items()
              if not key.startswith("_") and key not in _VOLATILE_CONFIG}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in skip:
                continue
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = flat[::step][:_SAMPLES_PER_TENSOR].contiguous().cpu()
            digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
            digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Weights frozen and dropout off while optimising an edit; the caller's settings come back after."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    training = model.training
    for param, _ in flags:
        param.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(training)


@dataclass(frozen=True)
class Deltas:
    """What an edit adds to each weight, computed on the model with ``fingerprint`` but not written: an editor's
    ``compute(edits)``. ``apply_deltas(model, deltas)`` writes them (``editor.apply(edits)`` computes and writes).

    ``deltas``: weight name → new minus old in float64, in the weight's own layout, so that writing them gives
    exactly the weights the editor computed. ``edits``: the short edits written (empty for AnyEdit's long ones).
    """

    method: str
    fingerprint: str
    edits: list[WeightEdit]
    deltas: dict[str, torch.Tensor]
    reports: list[EditReport] = field(default_factory=list)

    def write(self, model: nn.Module) -> AppliedEdit:
        """Add the deltas to ``model``'s weights (no checks: ``apply_deltas`` checks the fingerprint and shapes). A
        subtype whose edit is not a weight change (GRACE's codebook) overrides this."""
        writer = WeightWriter(model)
        try:
            for name, delta in self.deltas.items():
                writer.add(name, delta, exact=True)
        except BaseException:
            writer.restore()
            raise
        return writer.finish(method=self.method, edits=self.edits, fingerprint=self.fingerprint,
                             reports=self.reports)


class AppliedEdit:
    """What one application changed; ``undo`` restores the touched weights bit for bit.

    ``originals`` holds a clone of every touched weight from before the edit, ``deltas`` the change
    (new minus original) in the weight's own layout and dtype, ``reports`` one ``EditReport`` per edit.
    """

    def __init__(self, model: nn.Module, *, method: str, edits: Sequence[WeightEdit], fingerprint: str,
                 originals: dict[str, torch.Tensor], reports: Sequence[EditReport] = ()) -> None:
        self.model = model
        self.method = method
        self.edits = list(edits)
        self.fingerprint = fingerprint
        self.originals = originals
        self.reports = list(reports)
        params = dict(model.named_parameters())
        self._params = {name: params[name] for name in originals}
        self.deltas = {name: (param.detach() - originals[name]) for name, param in self._params.items()}
        self._versions = {name: param._version for name, param in self._params.items()}
        self._digests = {name: _digest(param) for name, param in self._params.items()}
        self.undone = False

    def undo(self) -> None:
        """Put back every touched weight exactly as it was before this edit (see the module doc on order)."""
        if self.undone:
            logger.warning("%s edit already undone; nothing to do", self.method)
            return
        # A later edit's undo also bumps the version while putting back exactly what this edit left, so a bumped
        # version only counts as a change when the contents differ too.
        changed = [name for name, param in self._params.items()
                   if param._version != self._versions[name] and _digest(param) != self._digests[name]]
        if changed:
            logger.warning("undoing a %s edit out of last-in-first-out order: %s changed after it; they get back "
                           "the tensors from before this edit, dropping the later change", self.method, changed)
        with torch.no_grad():
            for name, param in self._params.items():
                param.copy_(self.originals[name])
        bump_weights_version(self.model)
        self.undone = True

    def saved(self) -> dict[str, Any]:
        """The deltas and the fingerprint they belong to, for ``torch.save`` and ``apply_deltas``."""
        return {"format": SAVED_FORMAT, "method": self.method, "fingerprint": self.fingerprint,
                "edits": [edit.model_dump() for edit in self.edits],
                "deltas": {name: compact(delta.cpu()) for name, delta in self.deltas.items()}}

    def save(self, path: str | Path) -> None:
        torch.save(self.saved(), path)

    def __repr__(self) -> str:
        state = "undone" if self.undone else "applied"
        return f"AppliedEdit({self.method}, {len(self.edits)} edits, {len(self.originals)} weights, {state})"


def compact(delta: torch.Tensor) -> torch.Tensor | dict[str, Any]:
    """``delta`` as saved: a matrix whose change lives in few columns or rows (KN's and KNE's value slots) keeps
    only those, with their indices; any other tensor as it is."""
    if delta.dim() != 2:
        return delta
    best: dict[str, Any] | None = None
    for dim in (0, 1):
        index = torch.nonzero(delta.abs().sum(dim=1 - dim)).flatten()
        if 2 * len(index) < delta.shape[dim] and (best is None or len(index) < len(best["index"])):
            best = {"shape": list(delta.shape), "dim": dim, "index": index,
                    "values": delta.index_select(dim, index).clone()}
    return best if best is not None else delta


def expand(entry: torch.Tensor | Mapping[str, Any], name: str) -> torch.Tensor:
    """The full delta of a saved entry (``compact``'s inverse)."""
    if isinstance(entry, torch.Tensor):
        return entry
    try:
        values, index, dim = entry["values"], entry["index"], int(entry["dim"])
        full = torch.zeros(*entry["shape"], dtype=values.dtype)
        return full.index_copy_(dim, index, values)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise EditError(f"saved: delta for {name!r} is neither a tensor nor a readable sparse entry ({error}); "
                        "save edits with AppliedEdit.save(path)") from None


def _digest(param: torch.Tensor) -> tuple[float, float]:
    """Sums that tell whether a weight still holds what an edit left (cheap, unlike keeping a second copy)."""
    values = param.detach()  # float64 accumulation without a float64 copy of the weight
    return float(values.sum(dtype=torch.float64)), float(torch.linalg.vector_norm(values, dtype=torch.float64))


class WeightWriter:
    """Adds updates to named weights, cloning each weight the first time it is touched (for undo): what an editor
    writes while it computes (each update rounded to the weight's dtype, as it is used), and ``write``'s tool."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = dict(model.named_parameters())
        self.originals: dict[str, torch.Tensor] = {}

    def add(self, name: str, delta: torch.Tensor, *, exact: bool = False) -> None:
        """Add ``delta`` to weight ``name``, cast to the weight's dtype first; ``exact``: summed in float64 and
        rounded once, which gives exactly the weight a ``Deltas`` entry was measured to."""
        param = self.params[name]
        if name not in self.originals:
            self.originals[name] = param.detach().clone()
        with torch.no_grad():
            if exact:
                param.copy_(param.double().add_(delta.to(device=param.device, dtype=torch.float64)))
            else:
                param.add_(delta.to(device=param.device, dtype=param.dtype))
        bump_weights_version(self.model)

    def deltas(self) -> dict[str, torch.Tensor]:
        """Every touched weight's change so far, float64: new minus original."""
        return {name: self.params[name].detach().double() - original.double()
                for name, original in self.originals.items()}

    def restore(self) -> None:
        """Undo everything written so far (used when an edit fails halfway)."""
        with torch.no_grad():
            for name, original in self.originals.items():
                self.params[name].copy_(original)
        bump_weights_version(self.model)

    def finish(self, *, method: str, edits: Sequence[WeightEdit], fingerprint: str,
               reports: Sequence[EditReport] = ()) -> AppliedEdit:
        return AppliedEdit(self.model, method=method, edits=edits, fingerprint=fingerprint,
                           originals=self.originals, reports=reports)


def _load_saved(saved: Mapping[str, Any] | str | Path) -> Deltas:
    if isinstance(saved, str | Path):
        saved = torch.load(saved, map_location="cpu", weights_only=True)
    reader = OTHER_SAVED_FORMATS.get(saved.get("format")) if isinstance(saved, Mapping) else None
    if reader is not None:  # imported here: that module imports this one
        return importlib.import_module(reader).load_saved(saved)  # type: ignore[no-any-return]
    if not isinstance(saved, Mapping) or saved.get("format") not in READABLE_FORMATS:
        raise EditError(f"saved: not a saved weight edit (expected a dict with format {SAVED_FORMAT!r}, as made by "
                        "AppliedEdit.saved())")
    if not isinstance(saved.get("fingerprint"), str) or not isinstance(saved.get("deltas"), Mapping):
        raise EditError("saved: missing 'fingerprint' or 'deltas'; save edits with AppliedEdit.save(path)")
    edits = [WeightEdit.model_validate(edit) for edit in saved.get("edits", [])]
    deltas = {name: expand(entry, name) for name, entry in saved["deltas"].items()}
    return Deltas(str(saved.get("method", "saved")), saved["fingerprint"], edits, deltas)


def apply_deltas(model: nn.Module, saved: Deltas | Mapping[str, Any] | str | Path) -> AppliedEdit:
    """Write ``Deltas``, or a saved edit (a dict from ``AppliedEdit.saved()`` or a path to one), into the model
    they were computed for; ``handle.undo()`` takes them out again."""
    deltas = saved if isinstance(saved, Deltas) else _load_saved(saved)
    arch = ModelArch(model)
    fingerprint = model_fingerprint(model, arch)
    if deltas.fingerprint != fingerprint:
        raise FingerprintMismatch(
            f"saved: this edit was computed on model fingerprint {deltas.fingerprint[:16]}, but this "
            f"{arch.model_type} model's fingerprint is {fingerprint[:16]}; apply it only to the model it was made "
            "for (same architecture, config and weights), or recompute the edit on this model")
    params = dict(model.named_parameters())
    for name, delta in deltas.deltas.items():
        if name not in params or params[name].shape != delta.shape:
            raise EditError(f"saved: delta for {name!r} {tuple(delta.shape)} does not match this model's weights")
    return write(model, deltas)


def write(model: nn.Module, deltas: Deltas) -> AppliedEdit:
    """Write ``deltas`` into ``model`` (no checks: ``apply_deltas`` checks the fingerprint and shapes)."""
    return deltas.write(model)
