"""Prompts as token rows: context templates, where the subject ends, and the two batch layouts the editors run.

``make_batch`` left-pads rows cut after the subject's last token (keys and outputs are read there);
``SplitRows`` cuts each row at that token into a prefix, run once into a KV cache, and a suffix, run at every step
of the value optimisation.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from editagent.editors.base import fill
from editagent.editors.config import CONTEXT_PREFIXES

KL_TEMPLATE = "{} is a"

Rows = Sequence[tuple[list[int], int, int]]  # (token ids, site index, how many trailing predictions to read)


def context_templates(n: int) -> list[str]:
    """The bare prompt ``{}`` plus ``n`` prefixed versions of it."""
    return ["{}", *(f"{prefix} {{}}" for prefix in CONTEXT_PREFIXES[:n])]


def keeps_logits(model: nn.Module) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (then the LM head can run on a few positions only)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def subject_row(tokenizer: Any, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of ``template`` filled with ``subject``, and the index of the subject's last token."""
    ids = _encode(tokenizer, fill(template, subject))
    last = len(_encode(tokenizer, template.partition("{}")[0] + subject)) - 1
    return ids, min(last, len(ids) - 1)


@dataclass
class PromptBatch:
    """Left-padded rows (all end at the last column) and where each row's subject ends (``make_batch``: the last
    column)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    subject_col: torch.Tensor  # [rows] column of the subject's last token

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}

    def at_subject(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` [rows, columns, dim] at each row's subject column: [rows, dim]."""
        rows = torch.arange(len(self.subject_col), device=self.subject_col.device)
        return tensor[rows, self.subject_col]


def left_pad(tokenizer: Any, rows: Sequence[Sequence[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Token rows as one left-padded batch (input_ids, attention_mask, position_ids), so every row's last token is
    in the last column and positions count real tokens only."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), _pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        if ids:
            input_ids[i, width - len(ids):] = torch.tensor(list(ids))
            mask[i, width - len(ids):] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0).to(device)}


def make_batch(tokenizer: Any, rows: Sequence[tuple[list[int], int]], device: torch.device) -> PromptBatch:
    """``rows``: (token ids, subject's last index). Each row is cut after that index: only what is there is read,
    and in a causal model later tokens cannot change it."""
    rows = [(ids[: last + 1], last) for ids, last in rows]
    width = max(len(ids) for ids, _ in rows)
    batch = left_pad(tokenizer, [ids for ids, _ in rows], device)
    cols = [width - len(ids) + last for ids, last in rows]
    return PromptBatch(batch["input_ids"], batch["attention_mask"], batch["position_ids"],
                       torch.tensor(cols, device=device))


@dataclass
class SplitRows:
    """Rows cut at the subject's last token: the part before it never changes while δ is optimised, so it is run
    once into a KV cache; every step runs only the suffix, which starts with the subject's last token (column 0).

    The prefix is left-padded, the suffix right-padded; ``read`` says which suffix column to read for each row
    and predicted token.
    """

    prefix: dict[str, torch.Tensor] | None  # input_ids / attention_mask / position_ids; None when all are empty
    suffix_ids: torch.Tensor
    attention_mask: torch.Tensor  # over prefix + suffix
    position_ids: torch.Tensor  # of the suffix
    read: list[list[int]]  # per row: suffix columns whose logits the loss reads

    @classmethod
    def build(cls, tokenizer: Any, rows: Rows, device: torch.device) -> SplitRows:
        """``rows``: (token ids, subject's last index, how many trailing predictions to read)."""
        pad = _pad_id(tokenizer)
        heads = [ids[:last] for ids, last, _ in rows]
        tails = [ids[last:] for ids, last, _ in rows]
        width_p, width_s = max(len(h) for h in heads), max(len(t) for t in tails)
        prefix_ids = torch.full((len(rows), width_p), pad, dtype=torch.long)
        prefix_mask = torch.zeros((len(rows), width_p), dtype=torch.long)
        suffix_ids = torch.full((len(rows), width_s), pad, dtype=torch.long)
        suffix_mask = torch.zeros((len(rows), width_s), dtype=torch.long)
        read = []
        for i, (head, tail, (_, _, n_read)) in enumerate(zip(heads, tails, rows, strict=True)):
            if head:
                prefix_ids[i, width_p - len(head):] = torch.tensor(head)
                prefix_mask[i, width_p - len(head):] = 1
            suffix_ids[i, : len(tail)] = torch.tensor(tail)
            suffix_mask[i, : len(tail)] = 1
            read.append(list(range(len(tail) - n_read, len(tail))))
        lengths = prefix_mask.sum(dim=1, keepdim=True)
        prefix = None
        if width_p:
            prefix = {"input_ids": prefix_ids.to(device), "attention_mask": prefix_mask.to(device),
                      "position_ids": (prefix_mask.cumsum(-1) - 1).clamp(min=0).to(device)}
        return cls(prefix, suffix_ids.to(device), torch.cat([prefix_mask, suffix_mask], dim=1).to(device),
                   (lengths + torch.arange(width_s)).to(device), read)
