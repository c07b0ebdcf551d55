"""An HTTP face for EditAgent: the tools' verbs, per namespace, as a typed FastAPI app behind API keys.

The read routes, ``DELETE`` and ``ask`` are built from ``editagent.verbs.VERBS``: their query parameters (or
body) are the verb's arguments, a parameter the verb does not take is refused (422), and the answer is the verb's
result, as the tools and the CLI give it. ``editagent serve --store PATH --port 8000`` starts it; ``/docs`` and
``/openapi.json`` describe every route, its request and response models and its errors.
Routes (``{ns}`` is a namespace):

* ``GET    /{ns}/edits``                  live edits (``?include_history=true&limit=&offset=``, as ``list_edits``)
* ``POST   /{ns}/edits``                  one edit object, or a list of them stored all-or-nothing
* ``GET    /{ns}/edits/search?query=&limit=`` edits nearest to ``query``
* ``GET    /{ns}/edits/{id}``             one edit; ``/{ns}/edits/{id}/history``: every edit on its key
* ``PUT    /{ns}/edits/{id}``             a new object for the edit's subject and relation (supersedes it)
* ``DELETE /{ns}/edits/{id}``             forget an edit (it stays in the history)
* ``GET    /{ns}/graph?entity=&radius=``  the namespace's edit graph (or an entity's neighbourhood) as JSON
* ``POST   /{ns}/ask``                    ``{"question": ...}`` -> the answer and its hops

Every request carries ``Authorization: Bearer <key>`` (``editagent keys create``): 401 without a valid key, 403
for a namespace the key does not hold or a write with a read-only key. Errors are ``{"error": "field: what is
wrong"}``: 400 malformed JSON, 404 unknown id or entity, 409 an edit no longer live, 413 a body over
``MAX_REQUEST_BYTES``, 415 a body that is not JSON, 422 a bad field. Requests are served concurrently by worker
threads; the language model loads on the first question that needs it, and a question answered from edits
never loads it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from editagent.keys import KeyRing
from editagent.llm import LLM
from editagent.models import Embedder
from editagent.schema import (
    MAX_HTTP_BATCH,
    MAX_REQUEST_BYTES,
    Edit,
    EditError,
    EditId,
    EntityText,
    Metadata,
    SentenceText,
    SourceText,
    StoredEdit,
    check_namespace,
    describe_errors,
    describe_validation_error,
)
from editagent.service import INSECURE_WARNING, NO_KEY, EditMemory, Service, open_store, warn_without_keys
from editagent.tools import describe_arguments_error
from editagent.verbs import VERBS, Conflict, EditArguments, EditList, NotFound, Verb, live_edit, own_edit

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# -- the public models: requests, responses, errors ---------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error response."""

    error: str = Field(description="What is wrong, starting with the field: 'subject: must not be empty'.")


class EditBody(EditArguments):
    """An edit as a client sends it: the namespace comes from the URL and created_at from the server."""

    source: SourceText = Field("http", description="Where the fact came from.")
    metadata: Metadata = Field(default_factory=dict, description="Any JSON object, kept with the edit.")
    id: EditId | None = Field(None, description="Optional: the edit's id (default: a fresh one).")


class UpdateBody(BaseModel):
    """A new object for an edit's subject and relation: stored as a new edit that supersedes the old one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: EntityText = Field(description="The new value.")
    sentence: SentenceText = Field("", description="Optional: the fact as one sentence (default: from the relation).")
    aliases: list[EntityText] | None = Field(None, description="Optional: other names of the subject "
                                                               "(default: the old edit's).")
    source: SourceText = Field("http", description="Where the fact came from.")
    metadata: Metadata = Field(default_factory=dict, description="Any JSON object, kept with the edit.")


class Updated(BaseModel):
    edit: StoredEdit = Field(description="The new, live edit.")
    previous: StoredEdit = Field(description="The edit it superseded.")


class Health(BaseModel):
    status: Literal["ok"]


_WHY = {400: "The body is not valid JSON.", 401: "No valid API key.",
        403: "The key does not hold this namespace, or it is read-only and the request writes.",
        404: "No such edit or entity in this namespace.", 409: "The edit is no longer live.",
        413: f"The body is over {MAX_REQUEST_BYTES} bytes.", 415: "The body is not sent as application/json.",
        422: "A field is wrong; the message names it."}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}


_REF = "#/components/schemas/{model}"
_BODIES: dict[str, Any] = {  # request bodies, parsed by hand (400 vs 422, our messages) but documented here
    "edits": TypeAdapter(EditBody | Annotated[list[EditBody], Field(min_length=1, max_length=MAX_HTTP_BATCH)]),
    "update": TypeAdapter(UpdateBody),
}


def _body(name: str) -> dict[str, Any]:
    return _body_of(_BODIES[name])


def _body_of(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    schema = adapter.json_schema(ref_template=_REF)
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for adapter in _BODIES.values():  # the models the request bodies refer to
                components.update(adapter.json_schema(ref_template=_REF).get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    return build


class _BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) before they are read whole: declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await JSONResponse(self._refusal(), status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body with no length: FastAPI turns this into the 413
                raise HTTPException(413, self._refusal()["error"])
            return message

        await self.app(scope, counted, send)

    def _refusal(self) -> dict[str, str]:
        return {"error": f"body: at most {self.max_bytes} bytes per request; send large batches in parts"}


def _edits_from_body(payload: Any, namespace: str) -> list[Edit]:
    """One edit object or a list of them, each validated; errors name the item and the field."""
    single = isinstance(payload, dict)
    items = [payload] if single else payload
    if not isinstance(items, list):
        raise EditError(f"body: expected an edit object or a list of them, got {type(payload).__name__}")
    if not items:
        raise EditError("body: the list of edits is empty")
    if len(items) > MAX_HTTP_BATCH:
        raise EditError(f"edits: {len(items)} in one request, at most {MAX_HTTP_BATCH}; split the batch")
    edits = []
    for position, item in enumerate(items):
        prefix = "" if single else f"edits[{position}]."
        if not isinstance(item, dict):
            raise EditError(f"edits[{position}]: expected an edit object, got {type(item).__name__}")
        unknown = sorted(set(item) - set(EditBody.model_fields))
        if unknown:
            raise EditError(f"{prefix}{unknown[0]}: not allowed in an edit here; "
                            f"allowed: {', '.join(sorted(EditBody.model_fields))}")
        try:
            body = EditBody.model_validate(item)
            fields = body.model_dump(exclude_unset=True, exclude={"id"} if body.id is None else set())
            edits.append(Edit(**{"source": "http", **fields, "namespace": namespace}))
        except ValidationError as error:
            raise EditError(describe_validation_error(error, prefix=prefix)) from None
    return edits


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


async def _json_body(request: Request) -> Any:
    """The request's JSON body: 415 unless sent as JSON, 400 unless it parses (NaN and Infinity do not)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(415, "body: send JSON, with the header Content-Type: application/json")
    raw = await request.body()
    if not raw.strip():
        raise HTTPException(400, "body: required (a JSON document)")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise HTTPException(400, f"body: not valid JSON ({reason})") from None


def _validated(model: type[BaseModel], payload: Any) -> Any:
    if not isinstance(payload, dict):
        raise EditError(f"body: expected a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise EditError(describe_validation_error(error)) from None


def _request_error_text(error: RequestValidationError) -> str:
    """FastAPI's errors say where ("body", "query", "path") before the field: keep the field, or say "body"."""
    items = []
    for item in error.errors():
        kind, *loc = item.get("loc", ("body",))
        if item.get("type") == "json_invalid" or not loc:  # a JSON error's loc ends in a character offset
            loc = [kind]
        items.append({**item, "loc": tuple(loc)})
    return describe_errors(items)


GUARDED = (401, 403, 422)  # what every route but /health may answer


def _verb_errors(verb: Verb, path_fields: list[str], body: bool) -> dict[int | str, dict[str, Any]]:
    codes = [*GUARDED, *([404] if path_fields or verb.name == "graph" else []), *([409] if verb.destructive else []),
             *([400, 413, 415] if body else [])]
    return _errors(*codes)


def _parameters(verb: Verb, path_fields: list[str], query_fields: list[str]) -> dict[str, Any]:
    """The OpenAPI parameters of a verb's route, read off its arguments' model (the handler reads them itself)."""
    schema = verb.schema()
    return {"parameters": [
        {"name": name, "in": "path" if name in path_fields else "query",
         "required": name in path_fields or name in schema.get("required", []),
         "description": schema["properties"][name].get("description", ""), "schema": schema["properties"][name]}
        for name in [*path_fields, *query_fields]]}


def _query(request: Request, allowed: list[str]) -> dict[str, str]:
    """The query parameters, each once and each one the verb takes: a misspelt one is refused, never ignored."""
    params = request.query_params
    for name in params:
        if name not in allowed:
            raise EditError(f"{name[:100]}: not a parameter of this route; it takes "
                            f"{', '.join(allowed) if allowed else 'none'}")
        if len(params.getlist(name)) > 1:
            raise EditError(f"{name}: given more than once; give it once")
    return dict(params)


def _arguments(verb: Verb, payload: Any, *, from_strings: bool) -> Any:
    if not isinstance(payload, dict):
        raise EditError(f"body: expected a JSON object, got {type(payload).__name__}")
    try:
        if from_strings:
            return verb.arguments.model_validate_strings(payload)
        return verb.arguments.model_validate(payload)
    except ValidationError as error:
        raise EditError(describe_arguments_error(error)) from None


def _verb_route(app: FastAPI, service: Service, verb: Verb) -> None:
    """The route of one verb of the table (``verb.http``): its path fields and query parameters (or JSON body, for
    a POST) are the verb's arguments, validated by its model; the answer is its result."""
    method, path = verb.http.split(" ", 1)
    path_fields = [name for name in re.findall(r"{(\w+)}", path) if name != "namespace"]
    body = method == "POST"
    query_fields = [] if body else [name for name in verb.arguments.model_fields if name not in path_fields]
    permit = Depends(_permit(write=verb.writes))

    async def endpoint(request: Request, namespace: str = permit) -> Any:
        payload = await _json_body(request) if body else _query(request, query_fields)
        if isinstance(payload, dict):
            payload = {**payload, **{name: request.path_params[name] for name in path_fields}}
        arguments = _arguments(verb, payload, from_strings=not body)
        return await run_in_threadpool(service.run, namespace, verb, arguments)

    extra = _body_of(TypeAdapter(verb.arguments)) if body else {}
    extra.update(_parameters(verb, path_fields, query_fields) if path_fields or query_fields else {})
    app.add_api_route(path, endpoint, methods=[method], name=verb.name, response_model=verb.result,
                      responses=_verb_errors(verb, path_fields, body), openapi_extra=extra or None,
                      description=verb.description)


def create_app(store: str | Path = "default", *, llm: LLM | str | None = None,
               embedder: Embedder | str | None = None, memory: EditMemory | None = None,
               keys: KeyRing | None = None, auth: bool = True) -> FastAPI:
    """The app over one store. ``llm`` (an LLM or a model name, default the packaged one) loads on the first
    question that needs it, the embedder on the first edit or search. ``keys``: the API keys requests must carry
    (default: the store's own); ``auth=False`` lets every request in (local development only: it warns)."""
    owned = memory is None
    memory = memory if memory is not None else open_store(store, embedder=embedder)
    service = Service(memory, llm)
    ring = (keys or KeyRing(memory.backend.keys)) if auth else None
    if ring is None:
        logger.warning(INSECURE_WARNING, "every namespace of the store")
    else:
        warn_without_keys(ring)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            service.close()
        if ring is not None and keys is None:
            ring.close()

    app = FastAPI(title="editagent", summary="Edits an LLM agent's knowledge, per namespace.", lifespan=lifespan)
    app.state.service = service
    app.state.keys = ring
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    guarded = _errors(*GUARDED)

    @app.exception_handler(EditError)
    async def _edit_error(_: Request, error: EditError) -> JSONResponse:
        status = 404 if isinstance(error, NotFound) else 409 if isinstance(error, Conflict) else 422
        return JSONResponse({"error": str(error)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _request_error_text(error)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok")

    @app.post("/{namespace}/edits", status_code=201, response_model=EditList, openapi_extra=_body("edits"),
              responses={**guarded, **_errors(400, 413, 415)})
    async def add_edits(namespace: Writer, request: Request) -> EditList:
        edits = _edits_from_body(await _json_body(request), namespace)
        return EditList(edits=await run_in_threadpool(service.agent(namespace).edit_many, edits))

    @app.put("/{namespace}/edits/{edit_id}", response_model=Updated, openapi_extra=_body("update"),
             responses={**guarded, **_errors(400, 404, 409, 413, 415)})
    async def update_edit(namespace: Writer, edit_id: str, request: Request) -> Updated:
        body: UpdateBody = _validated(UpdateBody, await _json_body(request))

        def update() -> Updated:
            agent = service.agent(namespace)
            old = live_edit(agent, edit_id)
            new = agent.edit(old.subject, old.relation, body.object, sentence=body.sentence, source=body.source,
                             aliases=old.aliases if body.aliases is None else body.aliases, metadata=body.metadata,
                             previous_object=old.object)
            return Updated(edit=new, previous=own_edit(agent, old.id))

        return await run_in_threadpool(update)

    taken = {(method, route.path) for route in app.routes for method in getattr(route, "methods", ())}
    for verb in VERBS.values():  # every verb with a route but those whose body is read by hand above
        if verb.http and tuple(verb.http.split(" ", 1)) not in taken:
            _verb_route(app, service, verb)

    app.add_middleware(_BodyLimit, max_bytes=MAX_REQUEST_BYTES)
    return app


_bearer = HTTPBearer(auto_error=False, description="An API key from `editagent keys create`.")


def _permit(write: bool) -> Callable[..., str]:
    """The dependency that lets a request at ``{namespace}`` through: a valid key (401), a well-formed namespace
    (422), held by the key (403), with write scope when the request writes (403)."""

    def check(request: Request, namespace: str,
              credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:  # noqa: B008
        ring: KeyRing | None = request.app.state.keys
        key = None
        if ring is not None:
            key = ring.authenticate(credentials.credentials if credentials else None)
            if key is None:
                raise HTTPException(401, NO_KEY, headers={"WWW-Authenticate": "Bearer"})
        check_namespace(namespace)
        refusal = key.refusal(namespace, write=write) if key is not None else None
        if refusal:
            raise HTTPException(403, refusal)
        return namespace

    return check


Reader = Annotated[str, Depends(_permit(write=False))]
Writer = Annotated[str, Depends(_permit(write=True))]


def serve(store: str | Path, *, host: str = "127.0.0.1", port: int = 8000, llm: LLM | str | None = None,
          auth: bool = True) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn  # noqa: PLC0415 - only the server command needs it

    logger.info("serving store %s on http://%s:%d", store, host, port)
    uvicorn.run(create_app(store, llm=llm, auth=auth), host=host, port=port, log_level="info")
