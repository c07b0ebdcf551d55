"""What every editor is: ``compute(edits)`` gives the ``Deltas`` and leaves the model exactly as it was; ``apply``
writes them and returns the ``AppliedEdit`` whose ``undo()`` takes them out again (as kmeng01/rome's ``rome_main``).

While it computes, an editor may write into the weights (ROME writes edit after edit, MEMIT layer after layer and
again for its refits); ``compute`` then reads what changed and puts every touched weight back, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from editagent.editors.arch import ModelArch
from editagent.editors.base import (
    AppliedEdit,
    Deltas,
    EditReport,
    PromptedEdit,
    WeightEdit,
    WeightWriter,
    as_edits,
    model_fingerprint,
    write,
)
from editagent.editors.config import EditorConfig
from editagent.editors.prompts import context_templates
from editagent.schema import EditError


class Editor:
    """Base of ROME, MEMIT and AnyEdit: ``Editor(model, tokenizer, config)``, then ``compute`` or ``apply``.

    ``config``: the editor's config object (a dict of its fields is validated into one). ``stats_texts``: a corpus
    for the key statistics; by default the model samples its own text (offline). ``cache_dir``: where statistics
    are cached (default ``$EDITAGENT_CACHE``). A subclass names its ``method``, ``config_type`` and ``request_type``
    and implements ``load_statistics`` and ``_write``.
    """

    method: ClassVar[str]
    config_type: ClassVar[type[EditorConfig]]
    request_type: ClassVar[type[PromptedEdit]] = WeightEdit

    def __init__(self, model: nn.Module, tokenizer: Any, config: EditorConfig | dict[str, Any] | None = None, *,
                 stats_texts: Sequence[str] | None = None, cache_dir: str | Path | None = None,
                 progress: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        kind = self.config_type
        if isinstance(config, EditorConfig) and not isinstance(config, kind):
            raise EditError(f"config: {type(self).__name__} takes a {kind.__name__}, not a {type(config).__name__}; "
                            "make_editor(model, tokenizer, config) picks the editor a config belongs to")
        self.config: Any = config if isinstance(config, kind) else kind.model_validate(config or {})
        self.arch = ModelArch(model)
        self.templates = context_templates(self.config.n_context_templates)
        self.stats_texts = stats_texts
        self.cache_dir = cache_dir
        self.progress = progress
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """The model's fingerprint (unchanged by edits, so computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.arch)
        return self._fingerprint

    def compute(self, edits: Any) -> Deltas:
        """The deltas that write ``edits`` (one record, a dict of its fields, or a list of them); the model is left
        exactly as it was."""
        items = as_edits(edits, self.request_type)
        fingerprint = self.fingerprint
        self.load_statistics()
        writer = WeightWriter(self.model)
        try:
            reports = self._write(items, writer)
            deltas = writer.deltas()
        finally:
            writer.restore()
        written = [item for item in items if isinstance(item, WeightEdit)]  # a handle records short edits only
        return Deltas(self.method, fingerprint, written, deltas, list(reports))

    def apply(self, edits: Any) -> AppliedEdit:
        """Write ``edits`` into the weights: ``compute`` them, then write the deltas; ``handle.undo()`` takes them out
        again."""
        return write(self.model, self.compute(edits))

    def load_statistics(self) -> None:
        """Compute or load the key statistics every edit needs (once per editor); an editor that needs none
        (fine-tuning, GRACE, KN, KNE) keeps this."""

    def _write(self, items: list[Any], writer: WeightWriter) -> Sequence[EditReport]:
        """Write ``items`` through ``writer`` (``compute`` reads the result and restores the weights)."""
        raise NotImplementedError
