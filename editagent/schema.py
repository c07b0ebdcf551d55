"""The public records: Edit, SearchHit, Hop and Answer.

Validation lives here so that every face (Python, CLI, later tools and HTTP)
rejects bad input the same way, with an error that names the field and says
what is allowed. Imports nothing of editagent but the relation table.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from editagent.relations import canonical_relation, fact_sentence

MAX_ENTITY_CHARS = 200
MAX_RELATION_CHARS = 100
MAX_SENTENCE_CHARS = 1000
MAX_SOURCE_CHARS = 100
MAX_METADATA_BYTES = 16_384
MAX_QUESTION_CHARS = 2_000
# The interfaces an untrusted caller reaches (editagent.tools, editagent.server) bound their input before parsing it.
MAX_TOOL_ARGUMENTS_CHARS = 16_384
MAX_SEARCH_HITS = 50  # hits per search through a tool or HTTP: what a calling model can read in one result
MAX_HTTP_BATCH = 1_000
MAX_REQUEST_BYTES = 8 * 1024 * 1024
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EDIT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAMESPACE_RULE = "1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit"
DEFAULT_NAMESPACE = "default"


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
    "json_invalid": "not valid JSON",
    "string_type": "expected text",
}


def new_edit_id() -> str:
    return uuid.uuid4().hex


class Edit(BaseModel):
    """One changed fact: (subject, relation, object) plus the sentence retrieval searches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str
    relation: str
    object: str
    previous_object: str | None = None
    sentence: str = ""
    namespace: str = DEFAULT_NAMESPACE
    id: str = Field(default_factory=new_edit_id)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = "user"
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("subject", "object", mode="before")
    @classmethod
    def _entity(cls, value: Any, info: Any) -> str:
        return clean_text(info.field_name, value, MAX_ENTITY_CHARS)

    @field_validator("previous_object", mode="before")
    @classmethod
    def _previous(cls, value: Any) -> str | None:
        return None if value is None else clean_text("previous_object", value, MAX_ENTITY_CHARS)

    @field_validator("relation", mode="before")
    @classmethod
    def _relation(cls, value: Any) -> str:
        return canonical_relation(clean_text("relation", value, MAX_RELATION_CHARS))

    @field_validator("sentence", mode="before")
    @classmethod
    def _sentence(cls, value: Any) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            return ""
        return clean_text("sentence", value, MAX_SENTENCE_CHARS)

    @field_validator("namespace", mode="before")
    @classmethod
    def _namespace(cls, value: Any) -> str:
        return check_namespace(value)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return check_edit_id(value, optional=True)

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> str:
        return clean_text("source", value, MAX_SOURCE_CHARS)

    @field_validator("created_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> dict[str, Any]:
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

    @model_validator(mode="after")
    def _fill_sentence(self) -> Edit:
        if not self.sentence:
            object.__setattr__(self, "sentence", fact_sentence(self.subject, self.relation, self.object))
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        """What a newer edit supersedes on: (namespace, subject, relation), case-insensitive."""
        return (self.namespace, self.subject.casefold(), self.relation.casefold())


EditStatus = Literal["live", "superseded", "deleted"]


class StoredEdit(BaseModel):
    """An edit as the store holds it, with its life-cycle state."""

    model_config = ConfigDict(frozen=True)

    edit: Edit
    status: EditStatus = "live"
    superseded_by: str | None = None
    ended_at: datetime | None = None


class SearchHit(BaseModel):
    """One search result, shaped like mem0's: ``id``, ``memory`` (the sentence), ``score``."""

    model_config = ConfigDict(frozen=True)

    id: str
    memory: str
    score: float
    edit: Edit
    status: EditStatus = "live"

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise EditError(f"score: {value} is not a finite number")
        return value


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

    def __str__(self) -> str:
        return self.text
