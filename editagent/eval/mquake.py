"""MQuAKE (Zhong et al., 2023) as typed records, plus the answer matching its evaluation uses.

The loader reads a local JSON file or fetches a named upstream release once into a
cache, so benchmarks run offline after the first download. Records ignore unknown
keys (upstream has added fields before) but reject structurally broken cases with
an error that names the case and the field, so a bad file fails at load time and
not halfway through an expensive run.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from editagent.eval.data import write_atomically
from editagent.names import normalise_answer
from editagent.paths import cache_dir
from editagent.schema import DEFAULT_NAMESPACE, Edit

logger = logging.getLogger(__name__)

MQUAKE_BASE_URL = "https://raw.githubusercontent.com/princeton-nlp/MQuAKE/main/datasets/"
DOWNLOAD_TIMEOUT_S = 30.0

# Git blob SHA-1 of each upstream file at princeton-nlp/MQuAKE fb43dadc (2024-09-12).
# A mismatch is only logged: upstream may publish a corrected file under the same name.
KNOWN_DATASETS: dict[str, str] = {
    "MQuAKE-CF-3k": "b9d0963c6c1c81b24d8113ffdc3fd0865a423e18",
    "MQuAKE-CF-3k-v2": "6cf0904341e9910ce702641c5a24547ce23ff1e2",
    "MQuAKE-CF": "86f8c0d357f55173fc80a1d040e3eb480e2e76a7",
    "MQuAKE-T": "afd89d0c8fe5e304f771bad88cc0ced611278fe0",
}

MIN_HOPS = 2
MAX_HOPS = 4


class DatasetUnavailable(RuntimeError):
    """A named dataset is neither cached nor downloadable (offline, blocked or moved upstream)."""


class MQuAKEFormatError(ValueError):
    """A file or case does not have MQuAKE's shape; the message names the case and the field."""


def _non_empty(field: str, value: str) -> str:
    if not value.strip():
        raise ValueError(f"{field} must not be empty")
    return value


class _Record(BaseModel):
    """Frozen, and tolerant of keys upstream may add later."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Target(_Record):
    """An entity as MQuAKE writes it: its label (``str``) and Wikidata id."""

    str: str
    id: str = ""

    @field_validator("str")
    @classmethod
    def _label(cls, value: str) -> str:
        return _non_empty("str", value)


class RequestedRewrite(_Record):
    """One counterfactual edit: ``prompt.format(subject)`` should now complete with ``target_new``."""

    prompt: str
    relation_id: str
    target_new: Target
    target_true: Target
    subject: str
    question: str = ""

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError("prompt must hold exactly one '{}' placeholder for the subject")
        return value

    @field_validator("relation_id", "subject")
    @classmethod
    def _filled(cls, value: str, info: Any) -> str:
        return _non_empty(info.field_name, value)

    @property
    def object_new(self) -> str:
        return self.target_new.str

    @property
    def object_true(self) -> str:
        return self.target_true.str

    @property
    def sentence(self) -> str:
        """The edited fact as a sentence, e.g. ``"United Kingdom is located in the continent of Asia."``."""
        return f"{self.prompt.replace('{}', self.subject)} {self.object_new}."

    def to_edit(self, namespace: str = DEFAULT_NAMESPACE, case_id: int | None = None) -> Edit:
        """This rewrite as an :class:`Edit`; ``relation_id`` (``"P30"``) canonicalises to its label."""
        return Edit(
            subject=self.subject,
            relation=self.relation_id,
            object=self.object_new,
            previous_object=self.object_true,
            sentence=self.sentence,
            namespace=namespace,
            source="mquake",
            metadata={"relation_id": self.relation_id} if case_id is None
            else {"case_id": case_id, "relation_id": self.relation_id},
        )


class SingleHop(_Record):
    """One hop of the chain as its own question, cloze and gold answer."""

    question: str
    cloze: str = ""
    answer: str
    answer_alias: list[str] = Field(default_factory=list)

    @property
    def answers(self) -> list[str]:
        return [self.answer, *self.answer_alias]


Triple = tuple[str, str, str]


class Orig(_Record):
    """The chains as Wikidata-id and label triples; optional because only the evaluation of conflicts needs them."""

    triples: list[Triple] = Field(default_factory=list)
    triples_labeled: list[Triple] = Field(default_factory=list)
    new_triples: list[Triple] = Field(default_factory=list)
    new_triples_labeled: list[Triple] = Field(default_factory=list)
    edit_triples: list[Triple] = Field(default_factory=list)


class MQuAKECase(_Record):
    """One MQuAKE case: some edits and three paraphrased multi-hop questions whose answer they change."""

    case_id: StrictInt = Field(ge=1)
    requested_rewrite: list[RequestedRewrite] = Field(min_length=1)
    questions: list[str] = Field(min_length=1)
    answer: str
    answer_alias: list[str] = Field(default_factory=list)
    new_answer: str
    new_answer_alias: list[str] = Field(default_factory=list)
    single_hops: list[SingleHop]
    new_single_hops: list[SingleHop]
    orig: Orig = Field(default_factory=Orig)

    @field_validator("questions")
    @classmethod
    def _questions(cls, value: list[str]) -> list[str]:
        for index, question in enumerate(value):
            _non_empty(f"questions[{index}]", question)
        return value

    @field_validator("answer", "new_answer")
    @classmethod
    def _answers(cls, value: str, info: Any) -> str:
        return _non_empty(info.field_name, value)

    @field_validator("single_hops")
    @classmethod
    def _hop_count(cls, value: list[SingleHop]) -> list[SingleHop]:
        if not MIN_HOPS <= len(value) <= MAX_HOPS:
            raise ValueError(f"{len(value)} hops; MQuAKE cases have {MIN_HOPS} to {MAX_HOPS}")
        return value

    @model_validator(mode="after")
    def _same_chain_length(self) -> MQuAKECase:
        if len(self.new_single_hops) != len(self.single_hops):
            raise ValueError(f"new_single_hops has {len(self.new_single_hops)} hops but single_hops has "
                             f"{len(self.single_hops)}; both describe one chain and must be the same length")
        return self

    @property
    def n_hops(self) -> int:
        return len(self.single_hops)

    @property
    def n_edits(self) -> int:
        return len(self.requested_rewrite)

    @property
    def new_answers(self) -> list[str]:
        """Gold answers after the edits: ``new_answer`` then its aliases."""
        return [self.new_answer, *self.new_answer_alias]

    @property
    def old_answers(self) -> list[str]:
        """Gold answers before the edits: ``answer`` then its aliases."""
        return [self.answer, *self.answer_alias]

    def edits(self, namespace: str = DEFAULT_NAMESPACE) -> list[Edit]:
        return [rewrite.to_edit(namespace, case_id=self.case_id) for rewrite in self.requested_rewrite]


# --- loading -----------------------------------------------------------------------------------------------------


def _location(loc: tuple[int | str, ...]) -> str:
    """``("requested_rewrite", 0, "target_new", "str")`` -> ``"requested_rewrite[0].target_new.str"``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = _location(tuple(item["loc"])) or "case"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def parse_case(raw: Any, index: int = 0) -> MQuAKECase:
    """Validate one raw case; the error names its position in the file, its case_id and the field."""
    if not isinstance(raw, dict):
        raise MQuAKEFormatError(f"case #{index}: expected a JSON object, got {type(raw).__name__}")
    case_id = raw.get("case_id", "?")
    try:
        return MQuAKECase.model_validate(raw)
    except ValidationError as error:
        raise MQuAKEFormatError(f"case #{index} (case_id {case_id}): {_describe(error)}") from None


def parse_cases(raw: Any, limit: int | None = None) -> list[MQuAKECase]:
    """Validate a whole file's content: a JSON list of cases, the first ``limit`` of them."""
    if not isinstance(raw, list):
        raise MQuAKEFormatError(f"expected a JSON list of cases, got {type(raw).__name__}")
    cases = [parse_case(item, index) for index, item in enumerate(raw[:limit])]
    duplicates = [case_id for case_id, count in Counter(c.case_id for c in cases).items() if count > 1]
    if duplicates:
        logger.warning("MQuAKE: %d case_ids occur more than once, e.g. %s", len(duplicates), duplicates[:5])
    return cases


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise MQuAKEFormatError(f"{path}: not valid JSON ({error})") from None


def default_cache_dir() -> Path:
    """Where named datasets are kept: ``datasets/`` under editagent's cache (``$EDITAGENT_CACHE``)."""
    return cache_dir() / "datasets"


def dataset_url(name: str) -> str:
    return f"{MQUAKE_BASE_URL.rstrip('/')}/{name}.json"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(str(reason)) from error


def download_dataset(name: str, cache_dir: Path | None = None) -> Path:
    """Fetch ``name`` into the cache atomically (temp file, check it parses, rename) and return its path."""
    target = (cache_dir or default_cache_dir()) / f"{name}.json"
    url = dataset_url(name)
    logger.info("MQuAKE: downloading %s from %s", name, url)
    try:
        data = _fetch(url)
    except ConnectionError as error:
        raise DatasetUnavailable(f"MQuAKE dataset {name!r} is not cached at {target} and could not be downloaded "
                                 f"from {url} ({error}); pass a local path instead") from error
    try:
        json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetUnavailable(f"MQuAKE dataset {name!r}: {url} did not return JSON ({error}); "
                                 "pass a local path instead") from None
    if (blob := _git_blob_sha1(data)) != KNOWN_DATASETS[name]:
        logger.warning("MQuAKE: %s has git blob %s, not the known %s; upstream may have changed it",
                       name, blob, KNOWN_DATASETS[name])
    write_atomically(target, data)
    return target


def resolve_source(source: str | Path, cache_dir: Path | None = None) -> Path:
    """The local file for ``source``: an existing path, or a known name found in (or downloaded to) the cache."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    name = str(source).removesuffix(".json")
    if name not in KNOWN_DATASETS:
        raise ValueError(f"{str(source)!r} is neither an existing file nor a known MQuAKE dataset; "
                         f"known names: {', '.join(KNOWN_DATASETS)}")
    cached = (cache_dir or default_cache_dir()) / f"{name}.json"
    return cached if cached.is_file() else download_dataset(name, cache_dir)


def load_mquake(source: str | Path = "MQuAKE-CF-3k", *, limit: int | None = None,
                cache_dir: Path | None = None) -> list[MQuAKECase]:
    """Load MQuAKE cases from a local JSON file or a known dataset name.

    ``source`` is a path, or one of :data:`KNOWN_DATASETS`, read from ``cache_dir``
    (the folder holding ``<name>.json``; default :func:`default_cache_dir`) and
    downloaded there from princeton-nlp/MQuAKE on first use. ``limit`` keeps the
    first cases in file order. Raises :class:`DatasetUnavailable` when a name can
    be neither found nor fetched, ``ValueError`` for an unknown name and
    :class:`MQuAKEFormatError` for a malformed file.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit: {limit} is negative; pass None for all cases")
    path = resolve_source(source, cache_dir)
    cases = parse_cases(_read_json(path), limit)
    logger.debug("MQuAKE: %d cases from %s", len(cases), path)
    return cases


def conflicted_case_ids(cases: list[MQuAKECase]) -> set[int]:
    """Cases whose new chain another case's edit contradicts when all ``cases`` share one memory (k = all): that
    case edits a (subject, relation) on this case's new chain to another object. From the Wikidata-id triples."""
    edited: dict[tuple[str, str], set[tuple[str, int]]] = {}
    for case in cases:
        for subject, relation, obj in case.orig.edit_triples:
            edited.setdefault((subject, relation), set()).add((obj, case.case_id))
    return {case.case_id for case in cases for subject, relation, obj in case.orig.new_triples
            if any(other != case.case_id and their != obj for their, other in edited.get((subject, relation), ()))}


def load_conflicted_case_ids(path: str | Path) -> set[int]:
    """The case_ids listed in a JSON list, e.g. dev cases whose gold answer another case's edit contradicts."""
    raw = _read_json(Path(path))
    if not isinstance(raw, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        raise MQuAKEFormatError(f"{path}: expected a JSON list of integer case_ids")
    return set(raw)


# --- answer matching ---------------------------------------------------------------------------------------------

MatchMode = Literal["strict", "exact", "contains"]


def answer_matches(prediction: str, answers: list[str], mode: MatchMode = "exact") -> bool:
    """Whether ``prediction`` counts as one of the gold ``answers`` (an answer plus its aliases).

    - ``"strict"``: MQuAKE's own notebook, ``prediction.strip() in answers``; case and punctuation count.
    - ``"exact"`` (default): the normalised prediction equals a normalised answer (:func:`normalise_answer`).
      Lenient only in form, never in content, so it stays close to MQuAKE's reported numbers.
    - ``"contains"``: a normalised answer occurs in the normalised prediction as whole words, as PokeMQA
      and later work score free-form outputs; ``"Paris, France"`` matches ``"France"``, ``"Frances"`` does not.

    An answer that normalises to nothing (only punctuation or articles) never matches, so it cannot match
    every prediction.
    """
    if mode == "strict":
        return prediction.strip() in answers
    if mode not in ("exact", "contains"):
        raise ValueError(f"mode: {mode!r} is not one of 'strict', 'exact', 'contains'")
    predicted = normalise_answer(prediction)
    if not predicted:
        return False
    golds = [gold for gold in map(normalise_answer, answers) if gold]
    if mode == "exact":
        return predicted in golds
    padded = f" {predicted} "
    return any(f" {gold} " in padded for gold in golds)
