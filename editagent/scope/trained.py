"""The trained scope detector at run time, in the style of PokeMQA: a bi-encoder pre-detector and a cross-encoder
disambiguator, both fine-tuned from the packaged all-MiniLM-L6-v2 (training: ``editagent.train.scope``).

Use (``TrainedScopeDetector.judge``): the pre-detector embeds the question and every edit in memory;
the ``top_k`` edits whose cosine reaches ``pre_threshold`` are candidates; the disambiguator scores each
(question, candidate) pair; the best candidate is in scope iff its probability is >= 0.5, else no edit
applies. PokeMQA's script calls the disambiguator only when two or more candidates pass its
pre-detector (one candidate is taken as it is); here it judges every candidate, so one near miss
is blocked too.

Finding one (``load_trained``): training writes the detector's folder under ``<cache>/scope/`` and a pointer file
named after the base model it was fine-tuned from, which is all the runtime knows; so loading reads one small file
and never touches (or hashes) the training data. No pointer: nothing was trained, and the message says how.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from editagent.models import DEFAULT_EMBEDDER
from editagent.paths import cache_dir
from editagent.scope.base import ScopeModel, Verdict

logger = logging.getLogger(__name__)

INFO_FILE = "detector.json"
BI_ENCODER, CROSS_ENCODER = "bi-encoder", "cross-encoder"
TRAIN_COMMAND = "editagent scope train"
_MEMO_LIMIT = 200_000


def scope_cache_root() -> Path:
    return cache_dir() / "scope"


def pointer_path(base_model: str = DEFAULT_EMBEDDER, cache: str | Path | None = None) -> Path:
    """``<cache>/scope/trained-<base model>.json``: which trained folder the runtime loads for ``base_model``."""
    root = Path(cache) if cache is not None else scope_cache_root()
    return root / f"trained-{re.sub(r'[^A-Za-z0-9._-]+', '_', base_model).strip('._')}.json"


def write_pointer(folder: Path, base_model: str, cache: str | Path | None = None) -> Path:
    """Point the runtime at ``folder`` (a sibling of the pointer) for ``base_model``; atomic."""
    path = pointer_path(base_model, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"folder": folder.name, "base_model": base_model}, indent=2) + "\n")
    tmp.replace(path)
    return path


def trained_folder(base_model: str = DEFAULT_EMBEDDER, cache: str | Path | None = None) -> Path | None:
    """The folder the pointer for ``base_model`` names, when it holds a whole detector; else None."""
    path = pointer_path(base_model, cache)
    if not path.is_file():
        return None
    folder = path.parent / str(json.loads(path.read_text())["folder"])
    return folder if (folder / INFO_FILE).is_file() else None


def load_trained(base_model: str = DEFAULT_EMBEDDER, *, cache: str | Path | None = None,
                 device: str | None = None) -> TrainedScopeDetector | None:
    """The detector last trained from ``base_model`` (into ``cache``), or None when none was (``TRAIN_COMMAND``)."""
    folder = trained_folder(base_model, cache)
    if folder is None:
        return None
    logger.info("scope detector: loading the trained one in %s", folder)
    return TrainedScopeDetector.load(folder, device=device)


def encode_sentences(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts`` by a sentence-transformers model."""
    vectors = model.encode(list(texts), batch_size=128, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=len(texts) > 2000)
    return np.ascontiguousarray(vectors, dtype=np.float32)


# -- the detector ----------------------------------------------------------------------------------


@dataclass
class TrainedScopeDetector(ScopeModel):
    """Pre-detector candidates (top ``top_k`` with cosine >= ``pre_threshold``), then the disambiguator."""

    bi_encoder: Any
    cross_encoder: Any
    pre_threshold: float
    top_k: int = 3
    threshold: float = 0.5
    info: dict[str, Any] | None = None
    batch_size: int = 64
    name = "trained"

    def __post_init__(self) -> None:
        self._memo: dict[tuple[str, str], float] = {}

    @classmethod
    def load(cls, folder: str | Path, *, device: str | None = None) -> TrainedScopeDetector:
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        from sentence_transformers.cross_encoder import CrossEncoder  # noqa: PLC0415

        from editagent.models import default_device  # noqa: PLC0415

        folder = Path(folder)
        info = json.loads((folder / INFO_FILE).read_text())
        device = device or default_device()
        bi_encoder = SentenceTransformer(str(folder / BI_ENCODER), device=device)
        cross_encoder = CrossEncoder(str(folder / CROSS_ENCODER), device=device)
        bi_encoder.eval()
        cross_encoder.model.eval()
        return cls(bi_encoder, cross_encoder, pre_threshold=float(info["pre_threshold"]), top_k=int(info["top_k"]),
                   info=info)

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        if not sentences:
            return np.zeros((0, self.bi_encoder.get_sentence_embedding_dimension()), dtype=np.float32)
        return encode_sentences(self.bi_encoder, sentences)

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The disambiguator's p(in scope) per (question, edit sentence); remembers pairs it has scored."""
        import torch  # noqa: PLC0415

        todo = list(dict.fromkeys(pair for pair in pairs if pair not in self._memo))
        if len(self._memo) + len(todo) > _MEMO_LIMIT:
            self._memo.clear()
        network, tokenizer = self.cross_encoder.model, self.cross_encoder.tokenizer
        device = next(network.parameters()).device
        chunks = [todo[i: i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        with torch.inference_mode():
            for chunk in tqdm(chunks, desc="scope: disambiguator", unit="batch", disable=len(chunks) < 10):
                inputs = tokenizer([q for q, _ in chunk], [s for _, s in chunk], padding=True, truncation=True,
                                   max_length=self.bi_encoder.max_seq_length, return_tensors="pt").to(device)
                probs = torch.sigmoid(network(**inputs).logits.squeeze(-1).float()).tolist()
                self._memo.update(zip(chunk, probs, strict=True))
        return [self._memo[pair] for pair in pairs]

    def in_scope(self, question: str, edit_sentences: Sequence[str]) -> list[float]:
        """The disambiguator's probability for pairs the pre-detector lets through, 0 for the rest."""
        cosines = self.encode(edit_sentences) @ self.encode([question])[0]
        passed = [s for s, c in zip(edit_sentences, cosines, strict=True) if c >= self.pre_threshold]
        scored = dict(zip(passed, self.probabilities([(question, s) for s in passed]), strict=True))
        return [scored.get(s, 0.0) for s in edit_sentences]

    def judge(self, questions: Sequence[str], sentences: Sequence[str], *, vectors: np.ndarray | None = None,
              exclude: Sequence[frozenset[int]] | None = None) -> list[Verdict]:
        if not sentences:
            return [Verdict(None, None, 0.0) for _ in questions]
        scores = self.similarities(questions, sentences, vectors, exclude)
        k = min(self.top_k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        candidates = [[int(j) for j in row if math.isfinite(scores[i, j]) and scores[i, j] >= self.pre_threshold]
                      for i, row in enumerate(top)]
        flat = [(questions[i], sentences[j]) for i, row in enumerate(candidates) for j in row]
        probs = iter(self.probabilities(flat))
        verdicts = []
        for row in candidates:
            scored = [(next(probs), j) for j in row]
            if not scored:
                verdicts.append(Verdict(None, None, 0.0))
                continue
            probability, best = max(scored)
            verdicts.append(Verdict(best if probability >= self.threshold else None, best, probability))
        return verdicts
