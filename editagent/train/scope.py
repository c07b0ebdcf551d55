"""Training the scope detectors: the PokeMQA-style trained detector (``editagent.scope.trained`` loads it) and the
calibration constants of the embedding detector (``editagent.scope.embedding.CALIBRATION``).

Training (``train_detector``) is sized for a small CPU (see docs/decisions.md): one epoch each,
``max_seq_length`` 64, word embeddings frozen (half of MiniLM's weights, so each step is cheaper), one question
per edit for the pre-detector and a few hundred edits x (2 own + 3 hard negative) pairs for the disambiguator:

* split: ``split_by_edit`` (80/20 by edit group, ``seed``); a further ``calibration_fraction`` of the
  training edits is kept out of the bi-encoder's training to set ``pre_threshold``;
* pre-detector: in-batch-negatives contrastive loss (sentence-transformers' MultipleNegativesRankingLoss:
  cosine x 20, cross-entropy over the batch), (question, edit) pairs, one epoch, batches never holding
  two edits of one group (they are in scope of each other's questions);
* ``pre_threshold``: the cosine that keeps ``pre_recall`` of the calibration questions' own edits;
* disambiguator: ``CrossEncoder(num_labels=1)`` from the same MiniLM weights, binary cross-entropy on
  (question, edit) pairs: the question's own edit (1), and hard negatives (0): the pre-detector's
  nearest wrong edit, an edit on the same subject with another relation, and one on the same relation
  with another subject (the next-nearest wrong edit where none exists).

The trained folders are cached under ``<cache>/scope/<fingerprint of the data file and TrainConfig>/``
(``EDITAGENT_CACHE``, by default ``~/.cache/editagent``), and ``load_or_train`` points the runtime at the one it
returns (``editagent.scope.trained.write_pointer``): the runtime knows the base model, not the data.

``fit_calibration`` reproduces the embedding detector's constants (``benchmarks/scope_detector.py --calibrate``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from editagent.eval.scope_data import (
    ScopeEdit,
    edit_groups,
    in_scope_sets,
    load_scope_edits,
    resolve_data_path,
    split_by_edit,
)
from editagent.models import DEFAULT_EMBEDDER
from editagent.scope.embedding import Calibration
from editagent.scope.trained import (
    BI_ENCODER,
    CROSS_ENCODER,
    INFO_FILE,
    TrainedScopeDetector,
    encode_sentences,
    scope_cache_root,
    write_pointer,
)

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when training changes in a way TrainConfig does not show: old caches are then not reused


class TrainConfig(BaseModel):
    """What the trained detector is trained on and how; every field is part of the cache fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    test_fraction: float = Field(0.2, gt=0, lt=1)
    calibration_fraction: float = Field(0.1, gt=0, lt=1)
    max_train_edits: int | None = Field(None, ge=10, description="subsample the training edits (tests)")
    base_model: str = DEFAULT_EMBEDDER
    max_seq_length: int = Field(64, ge=16)
    bi_questions_per_edit: int = Field(1, ge=1)
    bi_batch_size: int = Field(64, ge=2)
    bi_lr: float = Field(5e-5, gt=0)
    cross_edits: int = Field(800, ge=1, description="training edits the disambiguator sees")
    cross_questions_per_edit: int = Field(2, ge=1)
    cross_batch_size: int = Field(32, ge=1)
    cross_lr: float = Field(4e-5, gt=0)
    pre_recall: float = Field(0.995, gt=0, le=1)
    top_k: int = Field(3, ge=1)


def fingerprint(data_path: Path, config: TrainConfig) -> str:
    """16 hex digits over the data file's bytes, the config and ``FORMAT``."""
    digest = hashlib.sha256(Path(data_path).read_bytes()).hexdigest()
    settings = json.dumps({"format": FORMAT, "data": digest, **config.model_dump()}, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def training_split(data: str | Path | None, config: TrainConfig) -> tuple[list[ScopeEdit], list[ScopeEdit]]:
    """(training edits, held-out edits) as ``train_detector`` uses them (``max_train_edits`` applied)."""
    split = split_by_edit(load_scope_edits(data), config.test_fraction, config.seed)
    train = split.train
    if config.max_train_edits is not None and config.max_train_edits < len(train):
        train = random.Random(config.seed).sample(train, config.max_train_edits)
    return train, split.test


def load_or_train(data: str | Path | None = None, config: TrainConfig | None = None, *,
                  cache: str | Path | None = None, device: str | None = None,
                  retrain: bool = False) -> TrainedScopeDetector:
    """The trained detector for ``data`` and ``config``: from the cache, or trained once and cached; either way the
    runtime's pointer for ``config.base_model`` then names it (``editagent.scope.trained.load_trained``)."""
    config = config or TrainConfig()
    data_path = resolve_data_path(data)
    root = Path(cache) if cache is not None else scope_cache_root()
    folder = root / fingerprint(data_path, config)
    if retrain or not (folder / INFO_FILE).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if retrain or not (folder / INFO_FILE).is_file():  # another process may have trained meanwhile
                train_detector(data_path, config, folder, device=device)
    else:
        logger.info("scope detector: loading the cached one in %s", folder)
    write_pointer(folder, config.base_model, root)
    return TrainedScopeDetector.load(folder, device=device)


def load_cached(data: str | Path | None = None, config: TrainConfig | None = None, *,
                cache: str | Path | None = None, device: str | None = None) -> TrainedScopeDetector | None:
    """The trained detector if one is cached for ``data`` and ``config`` (None otherwise: nothing is trained); the
    runtime finds one through its pointer instead (``load_trained``)."""
    config = config or TrainConfig()
    folder = Path(cache or scope_cache_root()) / fingerprint(resolve_data_path(data), config)
    return TrainedScopeDetector.load(folder, device=device) if (folder / INFO_FILE).is_file() else None


def train_detector(data: str | Path, config: TrainConfig, folder: Path, *, device: str | None = None) -> dict[str, Any]:
    """Train both models into ``folder`` (atomically, via a sibling ``.partial`` folder); return its info."""
    started = time.perf_counter()
    import torch  # noqa: PLC0415 - heavy import

    from editagent.models import _embedder_path, default_device  # noqa: PLC0415

    device = device or default_device()
    data_path = resolve_data_path(data)
    train, test = training_split(data_path, config)
    split = split_by_edit(train, config.calibration_fraction, config.seed + 1)
    fit, calibration = split.train, split.test
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = _embedder_path(config.base_model)
    seconds: dict[str, float] = {}
    logger.info("scope detector: training on %d edits (%d for the pre-detector), %d held out, device %s",
                len(train), len(fit), len(test), device)

    clock = time.perf_counter()
    torch.manual_seed(config.seed)
    bi_encoder, n_bi = _train_bi_encoder(base, fit, config, device)
    bi_encoder.save(str(work / BI_ENCODER))
    seconds["pre_detector"] = time.perf_counter() - clock

    clock = time.perf_counter()
    edit_vectors = encode_sentences(bi_encoder, [edit.sentence for edit in train])
    pre_threshold = _pre_threshold(bi_encoder, train, edit_vectors, {e.sentence for e in calibration},
                                   config.pre_recall)
    pairs = _mine_pairs(bi_encoder, train, edit_vectors, config)
    seconds["mining"] = time.perf_counter() - clock

    clock = time.perf_counter()
    torch.manual_seed(config.seed)
    cross_encoder = _train_cross_encoder(base, pairs, config, device)
    cross_encoder.save(str(work / CROSS_ENCODER))
    seconds["disambiguator"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started

    info = {
        "format": FORMAT, "config": config.model_dump(), "data": str(data_path),
        "data_sha256": hashlib.sha256(data_path.read_bytes()).hexdigest(),
        "test_sha256": hashlib.sha256("\n".join(sorted(e.sentence for e in test)).encode()).hexdigest(),
        "n_train_edits": len(train), "n_pre_detector_edits": len(fit), "n_test_edits": len(test),
        "n_pre_detector_pairs": n_bi, "n_disambiguator_pairs": len(pairs),
        "pre_threshold": pre_threshold, "top_k": config.top_k, "device": device,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    (work / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    work.rename(folder)
    logger.info("scope detector: trained in %.0f s into %s", seconds["total"], folder)
    return info


# -- training steps --------------------------------------------------------------------------------


def _trainable(network: Any) -> list[Any]:
    """All parameters but the word embeddings (half of MiniLM's weights): frozen, so one CPU epoch is cheaper."""
    for name, parameter in network.named_parameters():
        if "word_embeddings" in name:
            parameter.requires_grad_(False)
    return [parameter for parameter in network.parameters() if parameter.requires_grad]


def _schedule(optimizer: Any, steps: int) -> Any:
    from transformers import get_linear_schedule_with_warmup  # noqa: PLC0415

    return get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), max(1, steps))


def _group_batches(items: list[tuple[str, str, int]], size: int, rng: random.Random) -> list[list[tuple[str, str]]]:
    """Shuffled batches of (question, edit) in which no two items share a group (no false in-batch negatives)."""
    pending = items[:]
    rng.shuffle(pending)
    batches = []
    while pending:
        batch, seen, rest = [], set(), []
        for question, sentence, group in pending:
            if len(batch) < size and group not in seen:
                batch.append((question, sentence))
                seen.add(group)
            else:
                rest.append((question, sentence, group))
        batches.append(batch)
        pending = rest
    return batches


def _train_bi_encoder(base: str, edits: list[ScopeEdit], config: TrainConfig, device: str) -> tuple[Any, int]:
    import torch  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    rng = random.Random(config.seed)
    groups = edit_groups(edits)
    items = [(q, edit.sentence, group) for edit, group in zip(edits, groups, strict=True)
             for q in rng.sample(edit.questions, min(config.bi_questions_per_edit, len(edit.questions)))]
    batches = _group_batches(items, config.bi_batch_size, rng)
    model = SentenceTransformer(base, device=device)
    model.max_seq_length = config.max_seq_length
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    optimizer = torch.optim.AdamW(_trainable(model), lr=config.bi_lr)
    scheduler = _schedule(optimizer, len(batches))
    model.train()
    for batch in tqdm(batches, desc="scope: pre-detector", unit="batch"):
        questions, sentences = (list(column) for column in zip(*batch, strict=True))
        embedded = []
        for texts in (questions, sentences):
            features = {k: v.to(device) if hasattr(v, "to") else v for k, v in tokenize(texts).items()}
            embedded.append(torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1))
        logits = 20.0 * embedded[0] @ embedded[1].T  # MultipleNegativesRankingLoss: scale 20, cosine
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch), device=logits.device))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    model.eval()
    return model, len(items)


def _pre_threshold(model: Any, train: list[ScopeEdit], edit_vectors: np.ndarray, calibration: set[str],
                   pre_recall: float) -> float:
    questions, gold, owners = in_scope_sets(train)
    rows = [r for r, owner in enumerate(owners) if train[owner].sentence in calibration]
    scores = encode_sentences(model, [questions[r] for r in rows]) @ edit_vectors.T
    own = np.array([scores[i, list(gold[r])].max() for i, r in enumerate(rows)])
    threshold = float(np.quantile(own, 1.0 - pre_recall)) if len(own) else 0.0
    logger.info("scope detector: pre-detector threshold %.3f keeps %.1f%% of %d calibration questions' own edits",
                threshold, 100 * pre_recall, len(own))
    return round(threshold, 4)


def _mine_pairs(model: Any, train: list[ScopeEdit], edit_vectors: np.ndarray,
                config: TrainConfig) -> list[tuple[str, str, float]]:
    """(question, edit sentence, label) for the disambiguator: own edits and hard negatives."""
    rng = random.Random(config.seed + 2)
    questions, gold, owners = in_scope_sets(train)
    rows_of: dict[int, list[int]] = {}
    for row, owner in enumerate(owners):
        rows_of.setdefault(owner, []).append(row)
    chosen = rng.sample(range(len(train)), min(config.cross_edits, len(train)))
    asked = {i: rng.sample(rows_of[i], min(config.cross_questions_per_edit, len(rows_of[i]))) for i in chosen}
    flat = [row for i in chosen for row in asked[i]]
    scores = encode_sentences(model, [questions[r] for r in flat]) @ edit_vectors.T
    nearest = {row: [int(j) for j in np.argsort(-scores[k])[: 8 + len(gold[row])] if int(j) not in gold[row]]
               for k, row in enumerate(flat)}
    by_subject: dict[str, list[int]] = {}
    by_relation: dict[str, list[int]] = {}
    for i, edit in enumerate(train):
        if edit.subject and edit.relation:
            by_subject.setdefault(edit.subject.casefold(), []).append(i)
            by_relation.setdefault(edit.relation, []).append(i)
    pairs: list[tuple[str, str, float]] = []
    for i in chosen:
        edit, rows = train[i], asked[i]
        pairs.extend((questions[row], edit.sentence, 1.0) for row in rows)
        subject = (edit.subject or "").casefold()
        same_subject = [j for j in by_subject.get(subject, []) if train[j].relation != edit.relation]
        same_relation = [j for j in by_relation.get(edit.relation or "", []) if train[j].key != edit.key]
        used: set[int] = set()
        for slot, pool in enumerate((None, same_subject, same_relation)):
            row = rows[slot % len(rows)]
            options = [j for j in (pool or []) if j not in gold[row] and j not in used]
            pick = rng.choice(options) if options else next((j for j in nearest[row] if j not in used), None)
            if pick is not None:
                used.add(pick)
                pairs.append((questions[row], train[pick].sentence, 0.0))
    rng.shuffle(pairs)
    return pairs


def _train_cross_encoder(base: str, pairs: list[tuple[str, str, float]], config: TrainConfig, device: str) -> Any:
    import torch  # noqa: PLC0415
    from sentence_transformers.cross_encoder import CrossEncoder  # noqa: PLC0415

    model = CrossEncoder(base, num_labels=1, max_length=config.max_seq_length, device=device)
    network, tokenizer = model.model, model.tokenizer
    optimizer = torch.optim.AdamW(_trainable(network), lr=config.cross_lr)
    batches = [pairs[i: i + config.cross_batch_size] for i in range(0, len(pairs), config.cross_batch_size)]
    scheduler = _schedule(optimizer, len(batches))
    network.train()
    for batch in tqdm(batches, desc="scope: disambiguator", unit="batch"):
        questions, sentences, labels = zip(*batch, strict=True)
        inputs = tokenizer(list(questions), list(sentences), padding=True, truncation=True,
                           max_length=config.max_seq_length, return_tensors="pt").to(device)
        logits = network(**inputs).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(labels, device=device))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    network.eval()
    return model



# -- the embedding detector's calibration -----------------------------------------------------------


def _fit_logistic(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-3, steps: int = 50) -> tuple[float, float]:
    """Slope and intercept of a 1-D logistic regression (Newton's method, a little ridge for stability)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ weights))
        gradient = design.T @ (p - y) + ridge * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(weights[0]), float(weights[1])


def fit_calibration(embedder: Any, train: Sequence[ScopeEdit], *, questions_per_edit: int = 1,
                    seed: int = 0) -> Calibration:
    """Fit ``Calibration`` on training edits: own-edit cosine (1) vs best wrong-edit cosine (0) per question."""
    questions, gold, owners = in_scope_sets(train)
    rng, by_owner = random.Random(seed), dict[int, list[int]]()
    for row, owner in enumerate(owners):
        by_owner.setdefault(owner, []).append(row)
    rows = sorted(r for owned in by_owner.values() for r in rng.sample(owned, min(questions_per_edit, len(owned))))
    edit_vectors = embedder.encode([edit.sentence for edit in train], progress=True)
    question_vectors = embedder.encode([questions[r] for r in rows], progress=True)
    scores = question_vectors @ edit_vectors.T
    positives, negatives = [], []
    for i, r in enumerate(rows):
        own = list(gold[r])
        positives.append(scores[i, own].max())
        wrong = scores[i].copy()
        wrong[own] = -np.inf
        negatives.append(wrong.max())
    x = np.array(positives + negatives, dtype=np.float64)
    y = np.array([1.0] * len(positives) + [0.0] * len(negatives))
    slope, intercept = _fit_logistic(x, y)
    logger.info("calibration on %d questions: slope %.3f intercept %.3f threshold %.3f", len(rows), slope,
                intercept, -intercept / slope)
    return Calibration(slope=round(slope, 3), intercept=round(intercept, 3))
