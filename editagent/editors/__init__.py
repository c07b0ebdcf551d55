"""Parameter editing: write facts into a model's weights (ROME, MEMIT; AnyEdit for long targets; the FT-L and FT-M
fine-tuning baselines; KN and KNE), or beside them (GRACE's codebook), reversibly.

    rome = ROME(model, tokenizer)                     # or make_editor(model, tokenizer, MemitConfig(...))
    edit = WeightEdit(prompt="The Eiffel Tower is located in the city of", subject="The Eiffel Tower", target="Rome")
    deltas = rome.compute([edit])                     # the model is left exactly as it was
    handle = rome.apply([edit])                       # compute, then write; returns an AppliedEdit
    handle.undo()

Names load lazily: ``from editagent.editors.config import RomeConfig`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from editagent.editors.anyedit import AnyEdit, LongEdit
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
    from editagent.editors.cake import CAKE, CakeEdit
    from editagent.editors.config import (
        AnyEditConfig,
        CakeConfig,
        EditorConfig,
        FineTuneConfig,
        FtlConfig,
        FtmConfig,
        GraceConfig,
        KnConfig,
        KneConfig,
        MemitConfig,
        MendConfig,
        RomeConfig,
        ValueConfig,
        editor_config,
    )
    from editagent.editors.editor import Editor
    from editagent.editors.finetune import FTL, FTM, FineTune
    from editagent.editors.grace import GRACE, CodebookDeltas, CodebookEdit
    from editagent.editors.kn import KN
    from editagent.editors.kne import KNE
    from editagent.editors.memit import MEMIT
    from editagent.editors.mend import MEND, MendNetwork
    from editagent.editors.registry import EDITORS, make_editor
    from editagent.editors.rome import ROME
    from editagent.editors.stats import key_second_moment, key_second_moments

__all__ = [
    "ARCH_SPECS",
    "CAKE",
    "EDITORS",
    "FTL",
    "FTM",
    "GRACE",
    "KN",
    "KNE",
    "MEMIT",
    "MEND",
    "ROME",
    "AnyEdit",
    "AnyEditConfig",
    "AppliedEdit",
    "ArchSpec",
    "CakeConfig",
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
    "FtlConfig",
    "FtmConfig",
    "GraceConfig",
    "KnConfig",
    "KneConfig",
    "LongEdit",
    "MemitConfig",
    "MendConfig",
    "MendNetwork",
    "ModelArch",
    "RomeConfig",
    "UnsupportedArchitecture",
    "ValueConfig",
    "WeightEdit",
    "apply_deltas",
    "editor_config",
    "key_second_moment",
    "key_second_moments",
    "make_editor",
    "model_fingerprint",
    "register_arch",
]

_MODULES = {
    "anyedit": ("AnyEdit", "LongEdit"),
    "arch": ("ARCH_SPECS", "ArchSpec", "ModelArch", "UnsupportedArchitecture", "register_arch"),
    "base": ("AppliedEdit", "Deltas", "EditReport", "FingerprintMismatch", "WeightEdit", "apply_deltas",
             "model_fingerprint"),
    "cake": ("CAKE", "CakeEdit"),
    "config": ("AnyEditConfig", "CakeConfig", "EditorConfig", "FineTuneConfig", "FtlConfig", "FtmConfig",
               "GraceConfig", "KnConfig", "KneConfig", "MemitConfig", "MendConfig", "RomeConfig", "ValueConfig",
               "editor_config"),
    "editor": ("Editor",),
    "finetune": ("FTL", "FTM", "FineTune"),
    "grace": ("GRACE", "CodebookDeltas", "CodebookEdit"),
    "kn": ("KN",),
    "kne": ("KNE",),
    "memit": ("MEMIT",),
    "mend": ("MEND", "MendNetwork"),
    "registry": ("EDITORS", "make_editor"),
    "rome": ("ROME",),
    "stats": ("key_second_moment", "key_second_moments"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    # Lazy: the configs stay importable without torch (the CLI stays fast); editors load torch when first used.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'editagent.editors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"editagent.editors.{module}"), name)
