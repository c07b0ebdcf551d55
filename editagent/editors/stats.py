"""Key statistics: the uncentered second moment C = E[k kᵀ] of the down-projection inputs at a layer.

ROME and MEMIT weigh an update by C⁻¹ so that it changes the output for the edited key while
disturbing typical keys as little as possible. C is estimated from text the caller gives or, offline
with no corpus, from text the model samples itself from a few neutral one-word starts. Keys are read at
the down projection (``capture``); the forward pass stops right after the deepest layer asked for, so
statistics for early layers cost a fraction of a full pass.

C is normalised per token (a mean, as in the ROME/MEMIT code), accumulated in float64, and cached as
``<cache>/stats/<fingerprint>-layer<L>[-normed]-<source>-<tokens>.pt`` (written to a temporary file, then
renamed). Sampled token ids are cached too, so statistics for another layer reuse the same text.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from editagent.editors.arch import ModelArch
from editagent.editors.base import model_fingerprint
from editagent.editors.capture import Probe, capture
from editagent.editors.config import DEFAULT_STATS_TOKENS
from editagent.paths import cache_dir as default_cache_dir
from editagent.schema import EditError

logger = logging.getLogger(__name__)

SAMPLE_STARTS = ("The", "In", "A", "It", "This", "When", "One", "There", "He", "She", "We", "Many", "After",
                 "For", "On", "I")
_SAMPLE_LENGTH = 64
_SAMPLE_BATCH = 64
_TEXT_LENGTH = 256
_TEXT_BATCH = 16
_SAMPLED_BATCH = 32  # rows of 64 sampled tokens per statistics pass


def stats_dir(cache_dir: str | Path | None = None) -> Path:
    """``<cache_dir>/stats``; by default under ``$EDITAGENT_CACHE`` or the user cache dir."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / "stats"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _texts_source(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return "texts" + digest.hexdigest()[:12]


def key_second_moments(model: nn.Module, tokenizer: Any, layers: Sequence[int], *,
                       texts: Sequence[str] | None = None, n_tokens: int = DEFAULT_STATS_TOKENS,
                       cache_dir: str | Path | None = None, progress: bool = True,
                       fingerprint: str | None = None, normalised: bool = False) -> dict[int, torch.Tensor]:
    """C = E[k kᵀ] (float64, [key_dim, key_dim]) for each of ``layers``, loaded from the cache when there.

    ``texts``: a corpus to read the first ``n_tokens`` tokens from (each text truncated to 256 tokens);
    ``None`` samples ``n_tokens`` tokens from the model itself (deterministic, offline). ``normalised``: where a
    norm follows the MLP (Gemma 3), each key is divided by that norm's divisor at its token
    (``ModelArch.output_divisor``), which makes the normalised MLP output linear in it (see ``memit``).
    """
    if n_tokens < 1:
        raise EditError(f"n_tokens: {n_tokens}; must be at least 1 (e.g. {DEFAULT_STATS_TOKENS})")
    if texts is not None and not any(t.strip() for t in texts):
        raise EditError("texts: no non-empty text; pass a corpus of plain-text documents, or None to sample")
    arch = ModelArch(model)
    layers = sorted({arch.check_layer(layer, "layers") for layer in layers})
    fingerprint = fingerprint or model_fingerprint(model, arch)
    folder = stats_dir(cache_dir)
    source = "sampled" if texts is None else _texts_source(texts)
    normed = {layer for layer in layers if normalised and arch.mlp_output_norm(layer) is not None}
    paths = {layer: folder / f"{fingerprint[:20]}-layer{layer}{'-normed' if layer in normed else ''}-{source}-"
                             f"{n_tokens}.pt" for layer in layers}
    found = {layer: _load(paths[layer], arch.key_dim(layer)) for layer in layers}
    missing = [layer for layer, value in found.items() if value is None]
    if missing:
        if texts is None:
            batches = _sampled_batches(model, tokenizer, n_tokens, folder / f"{fingerprint[:20]}-samples-{n_tokens}.pt",
                                       progress)
        else:
            batches = list(_text_batches(tokenizer, texts, n_tokens))
        sums, count = _accumulate(model, arch, missing, batches, progress, normed)
        for layer in missing:
            moment = sums[layer] / count
            _atomic_save({"mom2": moment.cpu(), "count": count, "layer": layer, "source": source,
                          "fingerprint": fingerprint, "normalised": layer in normed}, paths[layer])
            found[layer] = moment
        logger.info("key statistics for layers %s from %d tokens saved under %s", missing, count, folder)
    device = next(model.parameters()).device
    return {layer: found[layer].to(device) for layer in layers}  # type: ignore[union-attr]


def key_second_moment(model: nn.Module, tokenizer: Any, layer: int, **options: Any) -> torch.Tensor:
    """``key_second_moments`` for one layer."""
    return key_second_moments(model, tokenizer, [layer], **options)[layer]


def _load(path: Path, key_dim: int) -> torch.Tensor | None:
    if not path.exists():
        return None
    try:
        moment = torch.load(path, map_location="cpu", weights_only=True)["mom2"]
    except Exception as error:  # a damaged file is recomputed, not fatal
        logger.warning("ignoring unreadable key statistics %s (%s)", path, error)
        return None
    if tuple(moment.shape) != (key_dim, key_dim) or moment.dtype != torch.float64:
        logger.warning("ignoring key statistics %s: shape %s does not fit key size %d", path, tuple(moment.shape),
                       key_dim)
        return None
    return moment


def _text_batches(tokenizer: Any, texts: Sequence[str], n_tokens: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (ids, mask) batches holding the first ``n_tokens`` tokens of ``texts``."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: list[list[int]] = []
    total = 0
    for text in texts:
        if total >= n_tokens:
            break
        if not text.strip():
            continue
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])[:min(_TEXT_LENGTH, n_tokens - total)]
        rows.append(ids)
        total += len(ids)
    if total < n_tokens:
        logger.warning("texts hold %d tokens, fewer than the %d asked for; using them all", total, n_tokens)
    for start in range(0, len(rows), _TEXT_BATCH):
        chunk = rows[start: start + _TEXT_BATCH]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        yield ids, mask


def _start_ids(tokenizer: Any) -> list[list[int]]:
    """Token ids of the neutral starts, keeping those of the most common length so rows align."""
    encoded = [list(tokenizer(start, add_special_tokens=True)["input_ids"]) for start in SAMPLE_STARTS]
    lengths = [len(ids) for ids in encoded if ids]
    if not lengths:
        raise EditError("tokenizer: encodes the sampling starts to nothing; pass texts= to compute key statistics")
    common = max(set(lengths), key=lengths.count)
    return [ids for ids in encoded if len(ids) == common]


@torch.no_grad()
def sample_token_ids(model: nn.Module, tokenizer: Any, n_tokens: int, *, seed: int = 0,
                     length: int = _SAMPLE_LENGTH, batch_size: int = _SAMPLE_BATCH,
                     progress: bool = True) -> torch.Tensor:
    """[rows, length] token ids sampled from the model (temperature 1) after neutral one-word starts."""
    starts = _start_ids(tokenizer)
    rows = math.ceil(n_tokens / length)
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out: list[torch.Tensor] = []
    steps = math.ceil(rows / batch_size) * (length - len(starts[0]))
    bar = tqdm(total=steps, desc="sampling text for key statistics", disable=not progress, unit="step")
    for first in range(0, rows, batch_size):
        n = min(batch_size, rows - first)
        ids = torch.tensor([starts[(first + i) % len(starts)] for i in range(n)], device=device)
        logits_out = model(input_ids=ids, use_cache=True)
        cache = logits_out.cache
        seq = [ids]
        for _ in range(length - ids.shape[1]):
            # Inverse-CDF sampling, one uniform number per row: multinomial over a large vocabulary is far slower.
            cdf = torch.softmax(logits_out.logits[:, -1].double(), dim=-1).cumsum(dim=-1).cpu()
            draw = torch.rand((len(cdf), 1), generator=generator, dtype=torch.float64) * cdf[:, -1:]
            nxt = torch.searchsorted(cdf, draw).clamp(max=cdf.shape[1] - 1).to(device)
            seq.append(nxt)
            logits_out = model(input_ids=nxt, cache=cache, use_cache=True)
            cache = logits_out.cache
            bar.update(1)
        out.append(torch.cat(seq, dim=1)[:, :length].cpu())
    bar.close()
    return torch.cat(out)


def _sampled_batches(model: nn.Module, tokenizer: Any, n_tokens: int, path: Path,
                     progress: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = None
    if path.exists():
        try:
            ids = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            logger.warning("ignoring unreadable sampled text %s (%s)", path, error)
    if ids is None:
        logger.info("sampling %d tokens from the model for key statistics (once; cached in %s)", n_tokens, path)
        ids = sample_token_ids(model, tokenizer, n_tokens, progress=progress)
        _atomic_save(ids, path)
    flat_mask = (torch.arange(ids.numel()) < n_tokens).long().view_as(ids)  # exactly n_tokens tokens count
    return [(ids[i: i + _SAMPLED_BATCH], flat_mask[i: i + _SAMPLED_BATCH]) for i in range(0, len(ids), _SAMPLED_BATCH)]


@torch.no_grad()
def _accumulate(model: nn.Module, arch: ModelArch, layers: Sequence[int],
                batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                progress: bool, normed: set[int] | frozenset[int] = frozenset()) -> tuple[dict[int, torch.Tensor], int]:
    """Sum of k kᵀ (float64) over the unmasked tokens of ``batches`` at each layer, and the token count; at the
    ``normed`` layers k is divided by the output norm's divisor (``key_second_moments``)."""
    device = next(model.parameters()).device
    sums = {layer: torch.zeros(arch.key_dim(layer), arch.key_dim(layer), dtype=torch.float64, device=device)
            for layer in layers}
    probes = [Probe(arch.mlp_out(layer), "input") for layer in layers]
    probes += [Probe(arch.mlp_out(layer), "output") for layer in layers if layer in normed]
    count = 0
    for ids, mask in tqdm(batches, desc=f"key statistics, layers {list(layers)}", disable=not progress, unit="batch"):
        if not mask.any():
            continue
        ids, mask = ids.to(device), mask.to(device)
        keep = mask.bool()
        caught = capture(model, {"input_ids": ids, "attention_mask": mask}, probes,
                         lambda tensor, _keep=keep: tensor[_keep])
        outputs = iter(caught[len(layers):])  # of the normed layers, in order
        for layer, inputs in zip(layers, caught[: len(layers)], strict=True):
            keys = inputs.double()
            if layer in normed:
                keys = keys / arch.output_divisor(layer, next(outputs)).double()[:, None]
            sums[layer].addmm_(keys.T, keys)
        count += int(mask.sum())
    return sums, count
