"""Where an edit goes: the edit memory, the model's weights, or both.

**Memory is the default**, for reasons that matter to agents serving many users:

- *Scoped*: a memory edit belongs to one namespace. A weight edit changes the model for every
  user and agent that shares it.
- *Exact and local*: a stored fact is looked up, not learned. It is written in milliseconds and
  leaves unrelated answers alone (the router sends questions no edit touches to the plain model).
  A weight edit is an optimisation, takes seconds, and its locality is measured, never guaranteed
  (see ``benchmarks/results/editors_summary.json``).
- *Reversible and auditable*: ``forget`` and supersession keep the full history. Weight edits can
  be undone too, but only on the same weights, and in reverse order of application.
- *Any backend*: an OpenAI-compatible endpoint has no weights to write.

**Weights** suit a single-tenant model that must use the fact where no question names it
(free generation, long answers), or a model deployed without editagent around it. **Both**
keeps the memory's precision for questions and the model's own fluency elsewhere.

The policy only picks the default; ``EditAgent.edit(..., to="weights")`` overrides it per edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from editagent.editors.config import CONFIGS, AnyEditConfig, EditorConfig, RomeConfig, editor_config
from editagent.schema import Edit, EditError

EditTarget = Literal["memory", "weights", "both"]
TARGETS: tuple[str, ...] = ("memory", "weights", "both")

# The metadata key the controller writes on an edit it put into the weights (``view.IN_MEMORY_KEY`` beside it).
WEIGHTS_KEY = "weights"


class EditPolicy(BaseModel):
    """Default destination of new edits, and the weight editor used when it is (or includes) the weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: EditTarget = "memory"
    # Its type picks the editor: any registered editor of an edit's (short) object, kept as the subclass given.
    editor: EditorConfig = Field(default_factory=RomeConfig)

    @field_validator("editor", mode="before")
    @classmethod
    def _editor(cls, value: Any) -> Any:
        """A dict names its editor: {"method": "memit", "layers": [4, 5]} (no "method": ROME)."""
        if isinstance(value, Mapping):
            fields = dict(value)
            value = editor_config(fields.pop("method", "rome"), **fields)
        if isinstance(value, AnyEditConfig):
            raise EditError("editor: AnyEdit writes long texts, not an edit's object; use RomeConfig, MemitConfig, "
                            "GraceConfig or another editor's config")
        if isinstance(value, EditorConfig) and CONFIGS.get(type(value).method) is None:
            raise EditError(f"editor: {type(value).__name__} belongs to no registered editor; use one of "
                            f"{', '.join(CONFIGS)}")
        return value

    @field_serializer("editor")
    def _named_editor(self, value: EditorConfig) -> dict[str, Any]:
        """The dump names its editor, so that it validates back into the same config."""
        return {"method": type(value).method, **value.model_dump()}

    def target(self, requested: str | None) -> EditTarget:
        chosen = requested or self.default
        if chosen not in TARGETS:
            raise EditError(f"to: {chosen!r} is not one of {', '.join(TARGETS)}")
        return chosen  # type: ignore[return-value]


def weight_prompt(edit: Edit) -> str:
    """The edit's sentence up to its object: the prompt a weight editor teaches to continue with the object."""
    sentence = edit.sentence.rstrip().rstrip(".").rstrip()
    if not sentence.casefold().endswith(edit.object.casefold()):
        raise EditError(f"sentence: {edit.sentence!r} must end with the object {edit.object!r} to be written into "
                        "the weights; leave the sentence out to use the relation's template")
    prompt = sentence[: len(sentence) - len(edit.object)].rstrip()
    if edit.subject.casefold() not in prompt.casefold():
        raise EditError(f"sentence: the part before the object, {prompt!r}, must name the subject {edit.subject!r}")
    return prompt
