"""Scope detectors: is a stored edit in scope of a (sub)question? (PokeMQA, Gu et al. 2023)

Two kinds behind one interface (``ScopeModel``; ``.over(memory)`` gives the ``ScopeDetector`` callable
that ``PokeMQA`` takes):

* ``EmbeddingScopeDetector``: the memory's top-1 edit by MiniLM cosine, in scope above a threshold
  calibrated on PokeMQA's training data; nothing to train;
* ``TrainedScopeDetector`` (``load_or_train``): a fine-tuned bi-encoder pre-detector and a cross-encoder
  disambiguator, trained once on ``cls-filtered.json`` (``editagent scope train``) and cached.

Importing this package loads neither torch nor a model.
"""

from editagent.schema import EditError
from editagent.scope.base import Retriever, ScopeDetector, ScopeModel, Verdict
from editagent.scope.data import ScopeEdit, Split, load_scope_edits, resolve_data_path, split_by_edit
from editagent.scope.embedding import (
    CALIBRATION,
    DEFAULT_SCOPE_THRESHOLD,
    Calibration,
    EmbeddingScopeDetector,
    threshold_scope,
)
from editagent.scope.evaluate import ScopeMetrics, evaluate
from editagent.scope.trained import TrainConfig, TrainedScopeDetector, load_cached, load_or_train, training_split


def scope_model(scope: ScopeModel | str) -> ScopeModel | None:
    """The detector ``scope`` names: a ``ScopeModel`` as given, "embedding" (None: the reasoners' own calibrated
    threshold on a search's cosine) or "trained" (the cached trained detector; ``EditError`` saying how to train it
    when none is cached)."""
    if isinstance(scope, ScopeModel):
        return scope
    if scope == "embedding":
        return None
    if scope == "trained":
        detector = load_cached()
        if detector is None:
            raise EditError("scope: no trained scope detector is cached; train it once with `editagent scope train`")
        return detector
    raise EditError(f"scope: {scope!r} is not one of 'embedding', 'trained' (or a ScopeModel)")


__all__ = [
    "CALIBRATION",
    "DEFAULT_SCOPE_THRESHOLD",
    "Calibration",
    "EmbeddingScopeDetector",
    "Retriever",
    "ScopeDetector",
    "ScopeEdit",
    "ScopeMetrics",
    "ScopeModel",
    "Split",
    "TrainConfig",
    "TrainedScopeDetector",
    "Verdict",
    "evaluate",
    "load_cached",
    "load_or_train",
    "load_scope_edits",
    "resolve_data_path",
    "scope_model",
    "split_by_edit",
    "threshold_scope",
    "training_split",
]
