"""Parameter editing: write facts into a model's weights (ROME, MEMIT), reversibly.

    rome = ROME(model, tokenizer)
    handle = rome.apply([WeightEdit(prompt="The Eiffel Tower is located in the city of",
                                    subject="The Eiffel Tower", target="Rome")])
    handle.undo()
"""

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
from editagent.editors.rome import ROME, RomeConfig, ValueConfig
from editagent.editors.stats import key_second_moment, key_second_moments

__all__ = [
    "ARCH_SPECS",
    "MEMIT",
    "ROME",
    "AppliedEdit",
    "ArchSpec",
    "EditReport",
    "FingerprintMismatch",
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
