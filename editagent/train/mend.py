"""Training MEND's hypernetwork for one model, as in Mitchell et al. (2022); ``editagent.editors.mend`` only loads
and applies a trained one.

Each step samples edits, takes the rank-1 factors of their fine-tuning gradient on the unedited model, maps them
through the network to the update ΔW of every edited layer, and minimises

    L = L_edit + c_loc · KL(original ‖ edited)

through the update: L_edit is the target's teacher-forced NLL after the update on the edit prompt and its
paraphrases (the paper's equivalence neighbourhood), the KL is taken over every token of unrelated prompts. The base
model stays frozen; the update is added to the down projections' outputs by forward hooks (the same function and
gradients as W + ΔW), so the weights are never written. Adam trains the network (``lr``) and each layer's log step
(``lr_lr``), with the paper's gradient clipping.

``train`` checkpoints its whole state (network, optimisers, history) every ``checkpoint_every`` steps, so a stopped
run resumes where it stopped; ``mquake_training_items`` builds edits from MQuAKE cases (the driver,
``benchmarks/mend_train.py``, uses only cases outside the evaluation split).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from editagent.editors.arch import ModelArch
from editagent.editors.base import WeightEdit, frozen
from editagent.editors.capture import hidden
from editagent.editors.config import CONTEXT_PREFIXES
from editagent.editors.finetune import edit_loss, target_logprobs, target_rows
from editagent.editors.mend import MendNetwork, gradient_factors
from editagent.editors.prompts import device_of
from editagent.eval.editing import probe_for
from editagent.schema import EditError

logger = logging.getLogger(__name__)

TRAINING_STATE_FORMAT = "editagent.mend-training/1"


class TrainingSettings(BaseModel):
    """How the hypernetwork is trained; defaults follow the paper where a short CPU run allows (see each field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(500, ge=0, description="optimisation steps")
    edits_per_step: int = Field(1, ge=1, description="edits written together in each step (the paper's batch)")
    locality_per_step: int = Field(2, ge=0, description="unrelated prompts in each step's KL term")
    lr: float = Field(1e-4, gt=0, description="Adam's learning rate on the network (the paper's 1e-6 is for runs "
                                              "of 100k+ steps)")
    lr_lr: float = Field(1e-2, gt=0, description="Adam's learning rate on each layer's log step")
    c_loc: float = Field(10.0, ge=0, description="weight of the KL term against the edit loss (the paper's "
                                                 "c_edit = 0.1, as a ratio)")
    grad_clip: float = Field(100.0, gt=0, description="gradient norm clip (the paper's)")
    paraphrases: bool = Field(True, description="edit loss also on the edit's paraphrases, not only its prompt")
    checkpoint_every: int = Field(50, ge=1, description="steps between saved training states")
    seed: int = Field(0, description="seeds the network's init and the order of edits")


@dataclass
class TrainingItem:
    """One training edit: ``edit`` (whose gradient the network transforms) and ``paraphrases``, the same fact behind
    other prompts (edit loss only)."""

    edit: WeightEdit
    paraphrases: list[WeightEdit] = field(default_factory=list)

    def loss_edits(self, paraphrases: bool = True) -> list[WeightEdit]:
        return [self.edit, *self.paraphrases] if paraphrases else [self.edit]


def mquake_training_items(cases: Sequence[Any], clozes: Mapping[str, str], avoid_subjects: Sequence[str] = ()
                          ) -> list[TrainingItem]:
    """One item per requested rewrite of ``cases`` (deduplicated), with the rewrite's question and the relation's
    cloze as paraphrases where they name the subject; rewrites of ``avoid_subjects`` (the evaluation's) are left out."""
    avoid, seen, items = set(avoid_subjects), set(), []
    for case in cases:
        for index, rewrite in enumerate(case.requested_rewrite):
            key = (rewrite.subject, rewrite.relation_id, rewrite.object_new)
            if rewrite.subject in avoid or key in seen:
                continue
            seen.add(key)
            probe = probe_for(case, index, clozes)
            # model_construct: the question paraphrases ("Q: ...\nA:") span two lines, which WeightEdit refuses
            others = [WeightEdit.model_construct(prompt=text, subject=probe.edit.subject, target=probe.edit.target)
                      for text in probe.paraphrases if probe.edit.subject in text and text != probe.edit.text]
            items.append(TrainingItem(probe.edit, others))
    return items


def mquake_locality_texts(cases: Sequence[Any]) -> list[str]:
    """Unrelated prompts for the KL term: every single-hop cloze of ``cases`` (with its answer) and the neutral
    sentences of ``CONTEXT_PREFIXES``."""
    texts = [f"{hop.cloze} {hop.answer}" for case in cases for hop in case.single_hops if hop.cloze]
    return list(dict.fromkeys([*texts, *CONTEXT_PREFIXES]))


def _add_updates(arch: ModelArch, changes: Mapping[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[Any]:
    """Hooks adding −α δ̃ᵀ(ũ x) to each edited down projection's output: (W + ΔW) x without forming ΔW."""
    def hook_of(u: torch.Tensor, delta: torch.Tensor, lr: torch.Tensor) -> Any:
        def add(_module: nn.Module, args: Any, output: Any) -> Any:
            states = hidden(output)
            extra = F.linear(F.linear(args[0].float(), u), delta.T) * -lr
            states = states + extra.to(states.dtype)
            return (states, *output[1:]) if isinstance(output, tuple) else states
        return add
    return [arch.mlp_out(layer).register_forward_hook(hook_of(*change)) for layer, change in changes.items()]


def _locality_batch(tokenizer: Any, texts: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    return {key: value.to(device) for key, value in batch.items() if key in ("input_ids", "attention_mask")}


def _kl(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(before ‖ after) per token, averaged over the tokens ``mask`` keeps."""
    log_before, log_after = torch.log_softmax(before.float(), -1), torch.log_softmax(after.float(), -1)
    per_token = (log_before.exp() * (log_before - log_after)).sum(-1)
    return (per_token * mask).sum() / mask.sum()


@dataclass
class StepResult:
    """One edit's training loss and its parts: the target's mean NLL on the edit prompts before and after the update,
    on the paraphrases after it (nan without any), the target's mean probability on the edit prompts after it, and
    the KL on the unrelated prompts."""

    loss: torch.Tensor
    edit_loss_before: float
    edit_loss_after: float
    paraphrase_loss_after: float
    prob_after: float
    locality_kl: float


def edit_step(model: nn.Module, tokenizer: Any, network: MendNetwork, items: Sequence[TrainingItem],
              locality: Sequence[str], settings: TrainingSettings) -> StepResult:
    """One MEND edit of ``items`` and its training loss (differentiable in the network; nothing is written)."""
    arch, device = ModelArch(model), device_of(model)
    edits = [item.edit for item in items]
    rows = target_rows(tokenizer, edits, ["{}"], device)
    factors = gradient_factors(model, arch, rows, network.layers)
    deltas = {}
    for index, layer in enumerate(network.layers):
        u_new, delta_new = network(index, factors.inputs[layer], factors.grads[layer])
        deltas[layer] = (u_new, delta_new, network.edit_lr(index))
    wanted = [edit for item in items for edit in item.loss_edits(settings.paraphrases)]
    own = [edit in edits for edit in wanted]  # rows of the edit prompts themselves
    loss_rows = target_rows(tokenizer, wanted, ["{}"], device)
    with frozen(model), torch.enable_grad():
        if locality:
            batch = _locality_batch(tokenizer, locality, device)
            with torch.no_grad():
                original = model(**batch, use_cache=False).logits
        handles = _add_updates(arch, deltas)
        try:
            logits = loss_rows.logits(model)
            logprobs = target_logprobs(logits, loss_rows.targets)
            edit_term = edit_loss(logits, loss_rows, logprobs, "target")
            kl = (_kl(original, model(**batch, use_cache=False).logits, batch["attention_mask"].float())
                  if locality else torch.zeros((), device=device))
        finally:
            for handle in handles:
                handle.remove()
    nll = torch.stack([-row.detach().mean() for row in logprobs])
    mine = torch.tensor(own, device=nll.device)
    return StepResult(edit_term + settings.c_loc * kl, factors.loss, float(nll[mine].mean()),
                      float(nll[~mine].mean()) if not all(own) else float("nan"), float(nll[mine].neg().exp().mean()),
                      float(kl.detach()))


def _pick(pool: Sequence[Any], count: int, seed: int, step: int, avoid: Sequence[str] = ()) -> list[Any]:
    """``count`` members of ``pool`` for ``step``: stateless, so a resumed run draws what it would have drawn."""
    rng = random.Random(seed * 1_000_003 + step)
    order = rng.sample(range(len(pool)), len(pool))
    picked = [pool[i] for i in order if not any(text in str(pool[i]) for text in avoid)]
    return picked[:count]


def evaluate_network(model: nn.Module, tokenizer: Any, network: MendNetwork, items: Sequence[TrainingItem],
                     locality: Sequence[str], settings: TrainingSettings | None = None) -> dict[str, float]:
    """Mean over ``items`` (each edited alone) of ``StepResult``'s readings; the network is not trained (eval
    mode); a reading no item has (the paraphrase loss without paraphrases) is nan."""
    settings = settings or TrainingSettings()
    training = network.training
    network.eval()
    readings: dict[str, list[float]] = {key: [] for key in ("edit_loss_before", "edit_loss_after",
                                                            "paraphrase_loss_after", "prob_after", "locality_kl")}
    try:
        for param in network.parameters():
            param.requires_grad_(False)
        for item in items:
            result = edit_step(model, tokenizer, network, [item], locality, settings)
            for key, values in readings.items():
                if not math.isnan(getattr(result, key)):
                    values.append(getattr(result, key))
    finally:
        for param in network.parameters():
            param.requires_grad_(True)
        network.train(training)
    return {key: sum(values) / len(values) if values else math.nan for key, values in readings.items()}


def train(model: nn.Module, tokenizer: Any, network: MendNetwork, items: Sequence[TrainingItem],
          locality: Sequence[str], settings: TrainingSettings, *, state_path: str | Path | None = None,
          progress: bool = True, on_checkpoint: Callable[[list[dict[str, Any]]], None] | None = None
          ) -> list[dict[str, Any]]:
    """Train ``network`` for ``settings.steps`` steps on ``items``; the history, one dict per step.

    With ``state_path``, the training state is saved there every ``checkpoint_every`` steps and at the end, and a
    run finds it and resumes from its step (a state from other settings or another network is refused).
    """
    if not items:
        raise EditError("items: no training edits")
    device = device_of(model)
    network.to(device).train()
    body = [param for name, param in network.named_parameters() if name != "log_lr"]
    optimiser = torch.optim.Adam([{"params": body, "lr": settings.lr},
                                  {"params": [network.log_lr], "lr": settings.lr_lr}])
    history: list[dict[str, Any]] = []
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != TRAINING_STATE_FORMAT or state["network"] != network.describe():
            raise EditError(f"{path}: a training state of another network; remove it to start afresh")
        if {k: v for k, v in state["settings"].items() if k != "steps"} != settings.model_dump(exclude={"steps"}):
            raise EditError(f"{path}: a training state with other settings ({state['settings']}); remove it to start "
                            "afresh, or resume with the same settings")
        network.load_state_dict(state["state"])
        optimiser.load_state_dict(state["optimiser"])
        history = list(state["history"])
        logger.info("MEND training: resuming at step %d from %s", len(history), path)

    def save() -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"format": TRAINING_STATE_FORMAT, "network": network.describe(),
                    "settings": settings.model_dump(), "state": network.state_dict(),
                    "optimiser": optimiser.state_dict(), "history": history}, tmp)
        tmp.replace(path)
        if on_checkpoint is not None:
            on_checkpoint(history)

    bar = tqdm(range(len(history), settings.steps), desc="MEND training", unit="step", disable=not progress,
               initial=len(history), total=settings.steps)
    for step in bar:
        start = time.perf_counter()
        batch = _pick(items, settings.edits_per_step, settings.seed, step)
        subjects = [item.edit.subject for item in batch]
        texts = _pick(locality, settings.locality_per_step, settings.seed + 1, step, subjects)
        result = edit_step(model, tokenizer, network, batch, texts, settings)
        optimiser.zero_grad()
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), settings.grad_clip)
        optimiser.step()
        history.append({"step": step + 1, "loss": result.loss.item(), "edit_loss_before": result.edit_loss_before,
                        "edit_loss_after": result.edit_loss_after,
                        "paraphrase_loss_after": (None if math.isnan(result.paraphrase_loss_after)
                                                  else result.paraphrase_loss_after),
                        "locality_kl": result.locality_kl,
                        "prob_after": result.prob_after,
                        "edit_lr": [float(x) for x in network.log_lr.detach().exp()],
                        "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{result.loss.item():.3f}", edit=f"{result.edit_loss_after:.2f}",
                        kl=f"{result.locality_kl:.3f}")
        if (step + 1) % settings.checkpoint_every == 0:
            save()
    bar.close()
    save()
    network.eval()
    return history
