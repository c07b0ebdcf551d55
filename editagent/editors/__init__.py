"""Parameter editing: write facts into a model's weights (ROME, MEMIT; AnyEdit for long targets), reversibly.

    rome = ROME(model, tokenizer)
    handle = rome.apply([WeightEdit(prompt="The Eiffel Tower is located in the city of",
                                    subject="The Eiffel Tower", target="Rome")])
    handle.undo()
"""

from editagent.editors.anyedit import AnyEdit, AnyEditConfig, LongEdit
from editagent.editors.arch import ARCH_SPECS, ArchSpec, ModelArch, UnsupportedArchitecture, register_arch
from editagent.editors.base import (
    AppliedEdit,
    EditReport,
    FingerprintMismatch,
    WeightEdit,
    apply_deltas,
    model_fingerprint,
)
from editagent.editors.memit import MEMIT, MemitConfig
from editagent.editors.rome import ROME, RomeConfig
from editagent.editors.stats import key_second_moment, key_second_moments
from editagent.editors.value import ValueConfig

__all__ = [
    "ARCH_SPECS",
    "MEMIT",
    "ROME",
    "AnyEdit",
    "AnyEditConfig",
    "AppliedEdit",
    "ArchSpec",
    "EditReport",
    "FingerprintMismatch",
    "LongEdit",
    "MemitConfig",
    "ModelArch",
    "RomeConfig",
    "UnsupportedArchitecture",
    "ValueConfig",
    "WeightEdit",
    "apply_deltas",
    "key_second_moment",
    "key_second_moments",
    "model_fingerprint",
    "register_arch",
]
