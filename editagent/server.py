"""An HTTP face for EditAgent: the tools' verbs, per namespace, as a small FastAPI app.

``editagent serve --store PATH --port 8000`` starts it. Routes (``{ns}`` is a namespace):

* ``GET    /{ns}/edits``                 live edits (``?history=true``: superseded and deleted too)
* ``POST   /{ns}/edits``                 one edit object, or a list of them stored all-or-nothing
* ``GET    /{ns}/edits/search?q=&limit=`` edits nearest to ``q``
* ``DELETE /{ns}/edits/{id}``            forget an edit (it stays in the history)
* ``POST   /{ns}/ask``                   ``{"question": ...}`` -> the answer and its hops

Bad input gets 422 and ``{"error": "field: what is wrong"}``; an unknown id 404; a request body over
``MAX_REQUEST_BYTES`` 413. There is no authentication: it listens on 127.0.0.1 unless told otherwise.
Requests are served one at a time (one lock): the memory and the LLM are shared by every namespace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from editagent.agent import EditAgent
from editagent.llm import LLM
from editagent.memory import EditMemory
from editagent.models import DEFAULT_EMBEDDER, Embedder, load_embedder
from editagent.schema import (
    MAX_HTTP_BATCH,
    MAX_REQUEST_BYTES,
    Edit,
    EditError,
    check_namespace,
    describe_errors,
    describe_validation_error,
)
from editagent.tools import AskArguments, SearchArguments, hit_row

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# What a client may set on an edit; namespace comes from the URL and created_at from the server.
_EDIT_FIELDS = frozenset({"subject", "aliases", "relation", "object", "previous_object", "sentence", "source",
                          "metadata", "id"})


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


class _Service:
    """One memory and one (lazily loaded) LLM behind every namespace's agent."""

    def __init__(self, memory: EditMemory, llm: LLM | str | None) -> None:
        self.memory = memory
        self.lock = threading.Lock()
        self._llm_holder = EditAgent(memory=memory, llm=llm)  # loads the LLM on the first ask, once

    def agent(self, namespace: str, *, with_llm: bool = False) -> EditAgent:
        llm = self._llm_holder.llm if with_llm else None
        return EditAgent(namespace=check_namespace(namespace), memory=self.memory, llm=llm)


def _edits_from_body(payload: Any, namespace: str) -> list[Edit]:
    """One edit object or a list of them, each validated; errors name the item and the field."""
    single = isinstance(payload, dict)
    items = [payload] if single else payload
    if isinstance(payload, bytes):  # FastAPI hands over a body that is not sent as JSON as it is
        raise EditError("body: expected JSON (Content-Type: application/json): an edit object or a list of them")
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
        unknown = sorted(set(item) - _EDIT_FIELDS)
        if unknown:
            raise EditError(f"{prefix}{unknown[0]}: not allowed in an edit here; "
                            f"allowed: {', '.join(sorted(_EDIT_FIELDS))}")
        try:
            edits.append(Edit(**{"source": "http", **item, "namespace": namespace}))
        except ValidationError as error:
            raise EditError(describe_validation_error(error, prefix=prefix)) from None
    return edits


def _request_error_text(error: RequestValidationError) -> str:
    """FastAPI's errors say where ("body", "query", "path") before the field: keep the field, or say "body"."""
    items = []
    for item in error.errors():
        kind, *loc = item.get("loc", ("body",))
        if item.get("type") == "json_invalid" or not loc:  # a JSON error's loc ends in a character offset
            loc = [kind]
        items.append({**item, "loc": tuple(loc)})
    return describe_errors(items)


def create_app(store: str | Path = "default", *, llm: LLM | str | None = None,
               embedder: Embedder | str | None = None, memory: EditMemory | None = None) -> FastAPI:
    """The app over one store; ``llm`` (an LLM or a model name, default the packaged one) loads on the first ask."""
    owned = memory is None
    if memory is None:
        if embedder is None or isinstance(embedder, str):
            embedder = load_embedder(embedder or DEFAULT_EMBEDDER)
        memory = EditMemory(store, embedder=embedder)
    service = _Service(memory, llm)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            service.memory.close()

    app = FastAPI(title="editagent", summary="Edits an LLM agent's knowledge, per namespace.", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(EditError)
    async def _edit_error(_: Request, error: EditError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _request_error_text(error)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/{namespace}/edits")
    def list_edits(namespace: str, history: bool = False) -> dict[str, Any]:
        with service.lock:
            rows = service.agent(namespace).edits(include_history=history)
        return {"edits": [row.model_dump(mode="json") for row in rows]}

    @app.post("/{namespace}/edits", status_code=201)
    def add_edits(namespace: str, payload: Any = Body(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
        check_namespace(namespace)
        edits = _edits_from_body(payload, namespace)
        with service.lock:
            stored = service.agent(namespace).edit_many(edits)
        return {"edits": [row.model_dump(mode="json") for row in stored]}

    @app.get("/{namespace}/edits/search")
    def search_edits(namespace: str, q: str, limit: int = 5) -> dict[str, Any]:
        try:
            arguments = SearchArguments(query=q, limit=limit)
        except ValidationError as error:
            raise EditError(describe_validation_error(error).replace("query:", "q:", 1)) from None
        with service.lock:
            hits = service.agent(namespace).search(arguments.query, limit=arguments.limit)
        return {"hits": [hit_row(hit) for hit in hits]}

    @app.delete("/{namespace}/edits/{edit_id}")
    def forget_edit(namespace: str, edit_id: str) -> dict[str, Any]:
        with service.lock:
            agent = service.agent(namespace)
            stored = agent.get(edit_id)
            if stored is None:
                raise HTTPException(404, f"id: no edit {edit_id!r} in namespace {namespace!r}")
            if stored.status != "live":
                raise HTTPException(409, f"id: edit {edit_id!r} is already {stored.status}")
            return {"edit": agent.forget(edit_id).model_dump(mode="json")}

    @app.post("/{namespace}/ask")
    def ask(namespace: str, payload: Any = Body(...)) -> dict[str, Any]:  # noqa: B008
        check_namespace(namespace)
        if not isinstance(payload, dict):
            raise EditError(f"body: expected {{\"question\": ...}}, got {type(payload).__name__}")
        try:
            question = AskArguments.model_validate(payload).question
        except ValidationError as error:
            raise EditError(describe_validation_error(error)) from None
        with service.lock:
            answer = service.agent(namespace, with_llm=True).ask(question)
        return answer.model_dump(mode="json")

    app.add_middleware(_BodyLimit, max_bytes=MAX_REQUEST_BYTES)
    return app


def serve(store: str | Path, *, host: str = "127.0.0.1", port: int = 8000, llm: LLM | str | None = None) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn  # noqa: PLC0415 - only the server command needs it

    logger.info("serving store %s on http://%s:%d", store, host, port)
    uvicorn.run(create_app(store, llm=llm), host=host, port=port, log_level="info")
