"""Where editagent keeps files it can rebuild (models, statistics, trained networks, store-side files): a leaf
module, so the store and the editors find the cache without importing the model loaders."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Where converted models and datasets live: ``$EDITAGENT_CACHE`` or the user's cache dir."""
    root = os.environ.get("EDITAGENT_CACHE") or platformdirs.user_cache_dir("editagent")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
