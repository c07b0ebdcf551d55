"""Scope detectors: is a stored edit in scope of a (sub)question? (PokeMQA, Gu et al. 2023)

Two kinds behind one interface (``ScopeModel``; ``.over(memory)`` gives the ``ScopeDetector`` callable
that ``PokeMQA`` takes):

* ``EmbeddingScopeDetector``: the memory's top-1 edit by MiniLM cosine, in scope above a threshold
  calibrated on PokeMQA's training data; nothing to train;
* ``TrainedScopeDetector`` (``load_trained``): a fine-tuned bi-encoder pre-detector and a cross-encoder
  disambiguator, trained once on ``cls-filtered.json`` (``editagent scope train``, ``editagent.train.scope``) and
  cached.

Importing this package loads neither torch nor a model. Training and scoring live outside it (``editagent.train``,
``editagent.eval.scope``).
"""

from editagent.schema import EditError
from editagent.scope.base import Retriever, ScopeDetector, ScopeModel, Verdict
from editagent.scope.embedding import (
    CALIBRATION,
    DEFAULT_SCOPE_THRESHOLD,
    Calibration,
    EmbeddingScopeDetector,
    threshold_scope,
)
from editagent.scope.trained import TRAIN_COMMAND, TrainedScopeDetector, load_trained


def scope_model(scope: ScopeModel | str) -> ScopeModel | None:
    """The detector ``scope`` names: a ``ScopeModel`` as given, "embedding" (None: the reasoners' own calibrated
    threshold on a search's cosine) or "trained" (the cached trained detector; ``EditError`` saying how to train it
    when none is cached)."""
    if isinstance(scope, ScopeModel):
        return scope
    if scope == "embedding":
        return None
    if scope == "trained":
        detector = load_trained()
        if detector is None:
            raise EditError(f"scope: no trained scope detector is cached; train it once with `{TRAIN_COMMAND}` (a "
                            "detector already trained is reused, not trained again)")
        return detector
    raise EditError(f"scope: {scope!r} is not one of 'embedding', 'trained' (or a ScopeModel)")


__all__ = [
    "CALIBRATION",
    "DEFAULT_SCOPE_THRESHOLD",
    "TRAIN_COMMAND",
    "Calibration",
    "EmbeddingScopeDetector",
    "Retriever",
    "ScopeDetector",
    "ScopeModel",
    "TrainedScopeDetector",
    "Verdict",
    "load_trained",
    "scope_model",
    "threshold_scope",
]
