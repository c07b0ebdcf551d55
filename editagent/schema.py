"""The public records: Edit, SearchHit, Hop and Answer.

Validation lives here so that every face (Python, CLI, later tools and HTTP)
rejects bad input the same way, with an error that names the field and says
what is allowed. Imports nothing of editagent but the relation table and the name keys (``names``).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from editagent.names import name_key, text_key
from editagent.relations import canonical_relation, fact_sentence

MAX_ENTITY_CHARS = 200
MAX_ALIASES = 20  # other names of an edit's subject ("UK", "Britain"), each an entity name
MAX_RELATION_CHARS = 100
MAX_SENTENCE_CHARS = 1000
MAX_SOURCE_CHARS = 100
MAX_METADATA_BYTES = 16_384
MAX_QUESTION_CHARS = 2_000
# The interfaces an untrusted caller reaches (editagent.tools, editagent.server) bound their input before parsing it.
MAX_TOOL_ARGUMENTS_CHARS = 16_384
MAX_SEARCH_LIMIT = 1_000  # hits per search from Python
MAX_SEARCH_HITS = 50  # hits per search through a tool or HTTP: what a calling model can read in one result
MAX_HTTP_BATCH = 1_000
MAX_REQUEST_BYTES = 8 * 1024 * 1024
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EDIT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAMESPACE_RULE = "1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit"
DEFAULT_NAMESPACE = "default"
DEFAULT_MAX_HOPS = 4  # hops (subquestions, relations) one question may take: MQuAKE's longest chains


class EditError(ValueError):
    """Bad input for an edit or a store operation; the message names the field and the fix."""


def _has_control_characters(text: str) -> bool:
    # Cs: a lone surrogate (JSON can carry one as "\ud800") cannot be encoded as UTF-8, so SQLite would refuse it
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in text)


def clean_text(field: str, value: Any, max_chars: int) -> str:
    """Strip, then reject empty, over-long or control-character text, naming ``field``."""
    if not isinstance(value, str):
        raise EditError(f"{field}: expected text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise EditError(f"{field}: must not be empty")
    if len(text) > max_chars:
        raise EditError(f"{field}: {len(text)} characters, at most {max_chars} allowed")
    if _has_control_characters(text):
        raise EditError(f"{field}: contains control characters (newlines, tabs, zero-width, format or surrogate "
                        "characters); write it on one line of plain text")
    return text


def check_namespace(value: Any, field: str = "namespace") -> str:
    # fullmatch, not match: '$' also matches before a trailing newline, which let "abc\n" through
    if not isinstance(value, str) or not NAMESPACE_PATTERN.fullmatch(value):
        raise EditError(f"{field}: {value!r} is not allowed; use {NAMESPACE_RULE}")
    return value


def check_edit_id(value: Any, field: str = "id", *, optional: bool = False) -> str:
    if not isinstance(value, str) or not EDIT_ID_PATTERN.fullmatch(value):
        hint = " (or leave it out)" if optional else ""
        raise EditError(f"{field}: {value!r} is not allowed; use 1-64 letters, digits, '_' or '-'{hint}")
    return value


def check_question(value: Any, field: str = "question") -> str:
    """A question goes into a prompt as one line: the same rules as edit text, at most MAX_QUESTION_CHARS."""
    return clean_text(field, value, MAX_QUESTION_CHARS)


def describe_validation_error(error: ValidationError, *, prefix: str = "") -> str:
    """``field: what is wrong`` per bad field, each after ``prefix`` (e.g. "edits[3]."), minus pydantic's wording."""
    return describe_errors(error.errors(), prefix=prefix)


def describe_errors(items: Iterable[Mapping[str, Any]], *, prefix: str = "") -> str:
    """``describe_validation_error`` for pydantic-shaped error dicts (FastAPI's request errors are too)."""
    parts = []
    for item in items:
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, EditError):  # our validators already name the field
            parts.append(f"{prefix}{cause}")
            continue
        field = ".".join(str(part) for part in item.get("loc", ())) or "input"
        parts.append(f"{prefix}{field}: {_PYDANTIC_WORDING.get(item['type'], item['msg'])}")
    return "; ".join(parts)


_PYDANTIC_WORDING = {
    "missing": "required",
    "extra_forbidden": "unknown field; it is not allowed here",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "model_type": "expected a JSON object",
    "dict_type": "expected a JSON object",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "json_invalid": "not valid JSON",
    "string_type": "expected text",
}


def new_edit_id() -> str:
    return uuid.uuid4().hex


# -- one set of field rules, shared by every record and every face's arguments ------------------------------


def _entity(value: Any, info: ValidationInfo) -> str:
    return clean_text(info.field_name or "text", value, MAX_ENTITY_CHARS)


def _optional_entity(value: Any, info: ValidationInfo) -> str | None:
    # Callers often send "" or null for an optional value they mean to leave out.
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _entity(value, info)


def _relation(value: Any) -> str:
    return clean_text("relation", value, MAX_RELATION_CHARS)


def _sentence(value: Any, info: ValidationInfo) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    return clean_text(info.field_name or "sentence", value, MAX_SENTENCE_CHARS)


def _source(value: Any) -> str:
    return clean_text("source", value, MAX_SOURCE_CHARS)


def _edit_id(value: Any, info: ValidationInfo) -> str:
    return check_edit_id(value, info.field_name or "id", optional=info.field_name == "id")  # Edit.id has a default


def _namespace(value: Any) -> str:
    return check_namespace(value)


def _question(value: Any, info: ValidationInfo) -> str:
    return clean_text(info.field_name or "question", value, MAX_QUESTION_CHARS)


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EditError(f"metadata: expected a JSON object (dict), got {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise EditError(f"metadata: must be JSON-serialisable without NaN/Infinity ({error})") from None
    except RecursionError:  # not a ValueError: pydantic would let it escape as a crash
        raise EditError("metadata: nested too deeply to store as JSON") from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise EditError(f"metadata: {len(encoded)} bytes as JSON, at most {MAX_METADATA_BYTES} allowed")
    return json.loads(encoded)


EntityText = Annotated[str, BeforeValidator(_entity), Field(max_length=MAX_ENTITY_CHARS)]
"""A subject or object: one line of plain text, 1-200 characters after stripping."""
OptionalEntityText = Annotated[Annotated[str, Field(max_length=MAX_ENTITY_CHARS)] | None,
                                 BeforeValidator(_optional_entity)]
RelationText = Annotated[str, BeforeValidator(_relation), Field(max_length=MAX_RELATION_CHARS)]
"""A relation as written: a label, an alias or a Wikidata id (``Edit`` keeps the canonical label)."""
SentenceText = Annotated[str, BeforeValidator(_sentence), Field(max_length=MAX_SENTENCE_CHARS)]
SourceText = Annotated[str, BeforeValidator(_source), Field(max_length=MAX_SOURCE_CHARS)]
EditId = Annotated[str, BeforeValidator(_edit_id), Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Namespace = Annotated[str, BeforeValidator(_namespace), Field(pattern=NAMESPACE_PATTERN.pattern)]
QuestionText = Annotated[str, BeforeValidator(_question), Field(max_length=MAX_QUESTION_CHARS)]
Metadata = Annotated[dict[str, Any], BeforeValidator(_metadata)]


class Edit(BaseModel):
    """One changed fact: (subject, relation, object) plus the sentence retrieval searches.

    ``aliases``: other names of the subject that questions may use ("UK", "Britain" for "United Kingdom").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: EntityText
    aliases: Annotated[tuple[EntityText, ...], Field(max_length=MAX_ALIASES)] = ()
    relation: Annotated[RelationText, AfterValidator(canonical_relation)]
    object: EntityText
    previous_object: OptionalEntityText = None
    sentence: SentenceText = ""
    namespace: Namespace = DEFAULT_NAMESPACE
    id: EditId = Field(default_factory=new_edit_id)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: SourceText = "user"
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("created_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _fill_sentence(self) -> Edit:
        if not self.sentence:
            object.__setattr__(self, "sentence", fact_sentence(self.subject, self.relation, self.object))
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        """What a newer edit supersedes on: (namespace, subject, relation), the subject by its name key ("The
        Beatles" and "Beatles" are one), the relation by case and spacing."""
        return (self.namespace, name_key(self.subject), text_key(self.relation))


EditStatus = Literal["live", "superseded", "deleted"]


class StoredEdit(Edit):
    """An edit as the store holds it: every field of ``Edit``, and where it is in its life cycle.

    What every read and write of the store returns (``EditAgent.edit``, ``edits``, ``get``, ``forget``...).
    """

    status: EditStatus = "live"
    superseded_by: str | None = None
    ended_at: datetime | None = None

    @classmethod
    def of(cls, edit: Edit, *, status: EditStatus = "live", superseded_by: str | None = None,
           ended_at: datetime | None = None) -> StoredEdit:
        """``edit`` with its life-cycle state (no re-validation: ``edit`` is already valid)."""
        fields = {name: getattr(edit, name) for name in Edit.model_fields}
        return cls.model_construct(**fields, status=status, superseded_by=superseded_by, ended_at=ended_at)

    def fact(self) -> Edit:
        """The plain ``Edit`` (without the life-cycle fields), e.g. to store it again elsewhere."""
        return Edit.model_construct(**{name: getattr(self, name) for name in Edit.model_fields})


class SearchHit(BaseModel):
    """One search result, shaped like mem0's: ``id``, ``memory`` (the sentence), ``score``; ``edit`` is the row."""

    model_config = ConfigDict(frozen=True)

    id: str
    memory: str
    score: float
    edit: StoredEdit

    @field_validator("edit", mode="before")
    @classmethod
    def _row(cls, value: Any) -> Any:
        return StoredEdit.of(value) if isinstance(value, Edit) and not isinstance(value, StoredEdit) else value

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise EditError(f"score: {value} is not a finite number")
        return value

    @property
    def status(self) -> EditStatus:
        return self.edit.status


class Hop(BaseModel):
    """One step of a multi-hop answer: what was asked, drafted, retrieved and concluded."""

    subquestion: str
    draft_answer: str = ""
    retrieved_edit_id: str | None = None
    retrieved_fact: str | None = None
    retrieval_score: float | None = None
    contradicted: bool = False
    answer: str = ""
    source: Literal["model", "edit", "graph"] = "model"
    # how the agent's method found the hop's answer: "exact" (the store holds this entity and relation), "meaning"
    # (the relation linked by meaning among the entity's edits), "retrieval" (a search of the namespace's edits,
    # judged by the scope detector) or "model"; None for the loops from the literature
    tier: Literal["exact", "meaning", "retrieval", "model"] | None = None
    relation: str | None = None


class Answer(BaseModel):
    """The reply of ``EditAgent.ask``: the final text and every hop that led to it."""

    question: str
    text: str
    trace: list[Hop] = Field(default_factory=list)
    method: str = "mello"
    namespace: str = DEFAULT_NAMESPACE
    raw: str = ""
    llm_calls: int = 0
    seconds: float = 0.0
    failure: str | None = None  # why the loop ended without a final answer (format break, too many hops)
    # where the router sent the question: "memory" (an edit answered a hop) or "model" (no edit applies)
    route: Literal["memory", "model"] | None = None
    # the worked examples the prompt held (the in-context methods, IKE and SERAC)
    demonstrations: list[str] = Field(default_factory=list)

    def __str__(self) -> str:
        return self.text
