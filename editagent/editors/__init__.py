"""Parameter editing: write facts into a model's weights (ROME, MEMIT; AnyEdit for long targets; the FT-L and FT-M
fine-tuning baselines; KN and KNE), or beside them (GRACE's codebook), reversibly.

    rome = ROME(model, tokenizer)                     # or make_editor(model, tokenizer, MemitConfig(...))
    edit = WeightEdit(prompt="The Eiffel Tower is located in the city of", subject="The Eiffel Tower", target="Rome")
    deltas = rome.compute([edit])                     # the model is left exactly as it was
    handle = rome.apply([edit])                       # compute, then write; returns an AppliedEdit
    handle.undo()

Names load lazily: ``from editagent.editors.config import RomeConfig`` does not import torch. Every registered
editor and its config are exported by class name (``register_editor``; ``editor_methods()`` lists them), so a new
editor needs no line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from editagent.editors import registry

if TYPE_CHECKING:
    from editagent.editors.anyedit import LongEdit
    from editagent.editors.arch import ARCH_SPECS, ArchSpec, ModelArch, UnsupportedArchitecture, register_arch
    from editagent.editors.base import (
        AppliedEdit,
        Deltas,
        EditReport,
        FingerprintMismatch,
        WeightEdit,
        apply_deltas,
        model_fingerprint,
    )
    from editagent.editors.cake import CakeEdit
    from editagent.editors.config import EditorConfig, FineTuneConfig, ValueConfig, editor_config
    from editagent.editors.editor import Editor
    from editagent.editors.finetune import FineTune
    from editagent.editors.grace import CodebookDeltas, CodebookEdit
    from editagent.editors.mend import MendNetwork
    from editagent.editors.registry import EDITORS, editor_methods, make_editor, register_editor
    from editagent.editors.stats import key_second_moment, key_second_moments

__all__ = [
    "ARCH_SPECS",
    "EDITORS",
    "AppliedEdit",
    "ArchSpec",
    "CakeEdit",
    "CodebookDeltas",
    "CodebookEdit",
    "Deltas",
    "EditReport",
    "Editor",
    "EditorConfig",
    "FineTune",
    "FineTuneConfig",
    "FingerprintMismatch",
    "LongEdit",
    "MendNetwork",
    "ModelArch",
    "UnsupportedArchitecture",
    "ValueConfig",
    "WeightEdit",
    "apply_deltas",
    "editor_config",
    "editor_methods",
    "key_second_moment",
    "key_second_moments",
    "make_editor",
    "model_fingerprint",
    "register_arch",
    "register_editor",
]
__all__ += registry.exported_names()  # every registered editor and its config, by class name

# Names that are not a registered editor or its config, by module.
_MODULES = {
    "anyedit": ("LongEdit",),
    "arch": ("ARCH_SPECS", "ArchSpec", "ModelArch", "UnsupportedArchitecture", "register_arch"),
    "base": ("AppliedEdit", "Deltas", "EditReport", "FingerprintMismatch", "WeightEdit", "apply_deltas",
             "model_fingerprint"),
    "cake": ("CakeEdit",),
    "config": ("EditorConfig", "FineTuneConfig", "ValueConfig", "editor_config"),
    "editor": ("Editor",),
    "finetune": ("FineTune",),
    "grace": ("CodebookDeltas", "CodebookEdit"),
    "mend": ("MendNetwork",),
    "registry": ("EDITORS", "editor_methods", "make_editor", "register_editor"),
    "stats": ("key_second_moment", "key_second_moments"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    # Lazy: the configs stay importable without torch (the CLI stays fast); editors load torch when first used.
    module = _WHERE.get(name)
    if module is not None:
        return getattr(importlib.import_module(f"editagent.editors.{module}"), name)
    found = registry.exported(name)
    if found is None:
        raise AttributeError(f"module 'editagent.editors' has no attribute {name!r}")
    return found


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE, *registry.exported_names()})


