"""One table from config type to editor, as peft maps its configs to methods: ``make_editor`` builds the editor a
config belongs to.

    make_editor(model, tokenizer)                                   # ROME with its defaults
    make_editor(model, tokenizer, MemitConfig(layers=[4, 5, 6]))
    make_editor(model, tokenizer, editor_config("anyedit"), progress=False)
    make_editor(model, tokenizer, GraceConfig(epsilon=0.2))         # also FtlConfig, FtmConfig, KnConfig, KneConfig

A new editor is one entry: ``EDITORS[MyConfig] = MyEditor`` (an ``Editor`` subclass taking ``MyConfig``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from editagent.editors.anyedit import AnyEdit
from editagent.editors.cake import CAKE
from editagent.editors.config import (
    AnyEditConfig,
    CakeConfig,
    EditorConfig,
    FtlConfig,
    FtmConfig,
    GraceConfig,
    KnConfig,
    KneConfig,
    MemitConfig,
    MendConfig,
    RomeConfig,
)
from editagent.editors.editor import Editor
from editagent.editors.finetune import FTL, FTM
from editagent.editors.grace import GRACE
from editagent.editors.kn import KN
from editagent.editors.kne import KNE
from editagent.editors.memit import MEMIT
from editagent.editors.mend import MEND
from editagent.editors.rome import ROME
from editagent.schema import EditError

EDITORS: dict[type[EditorConfig], type[Editor]] = {RomeConfig: ROME, MemitConfig: MEMIT, AnyEditConfig: AnyEdit,
                                                   FtlConfig: FTL, FtmConfig: FTM, GraceConfig: GRACE, KnConfig: KN,
                                                   KneConfig: KNE, MendConfig: MEND, CakeConfig: CAKE}


def make_editor(model: nn.Module, tokenizer: Any, config: EditorConfig | None = None, **options: Any) -> Editor:
    """The editor for ``config`` (None: ROME with its defaults) on ``model``; ``options`` go to its constructor
    (``stats_texts``, ``cache_dir``, ``progress``)."""
    config = config if config is not None else RomeConfig()
    for kind in type(config).__mro__:  # a subclass of a registered config gets its parent's editor
        if kind in EDITORS:
            return EDITORS[kind](model, tokenizer, config, **options)
    raise EditError(f"config: no editor is registered for {type(config).__name__}; add one to "
                    "editagent.editors.registry.EDITORS")
