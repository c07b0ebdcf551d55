"""editagent: keep LLM agents' knowledge up to date."""

from typing import TYPE_CHECKING

from editagent.schema import Answer, Edit, EditError, Hop, SearchHit, StoredEdit

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these load on first use (__getattr__ below)
    from editagent.agent import EditAgent
    from editagent.graph import EditGraph
    from editagent.memory import EditMemory
    from editagent.models import load_causal_lm, load_embedder
    from editagent.policy import EditPolicy

__all__ = [
    "Answer",
    "Edit",
    "EditAgent",
    "EditError",
    "EditGraph",
    "EditMemory",
    "EditPolicy",
    "Hop",
    "SearchHit",
    "StoredEdit",
    "load_causal_lm",
    "load_embedder",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Lazy: `import editagent` stays fast; torch and FAISS load when first needed.
    if name == "EditAgent":
        from editagent.agent import EditAgent

        return EditAgent
    if name == "EditMemory":
        from editagent.memory import EditMemory

        return EditMemory
    if name == "EditPolicy":
        from editagent.policy import EditPolicy

        return EditPolicy
    if name == "EditGraph":
        from editagent.graph import EditGraph

        return EditGraph
    if name in ("load_causal_lm", "load_embedder"):
        from editagent import models

        return getattr(models, name)
    raise AttributeError(f"module 'editagent' has no attribute {name!r}")
