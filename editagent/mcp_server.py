"""An MCP server for EditAgent (the official ``mcp`` SDK): every tool of ``editagent.tools``, over stdio or HTTP.

``editagent mcp --store PATH --namespace alice`` speaks MCP on stdin/stdout, for a desktop host that starts it;
``editagent mcp --http --port 8765`` serves the streamable HTTP transport at ``/mcp``, where every request
carries an API key (``Authorization: Bearer <key>``, from ``editagent keys create``).

The tools, their input schemas and their validation are those of ``editagent.tools.TOOL_TABLE``. The namespace is
never a tool argument: it is the server's (``--namespace``) or, over HTTP without ``--namespace``, the one the
caller's key holds. A refused call comes back as a tool error (``isError``) whose text names the field, for the
calling model to fix. The embedder loads on the first edit or search, the language model on the first question
that needs it.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.stdio import stdio_server
from starlette.applications import Starlette

from editagent import __version__
from editagent.keys import ApiKey, KeyRing
from editagent.schema import EditError, check_namespace
from editagent.service import INSECURE_WARNING, NO_KEY, Service, warn_without_keys
from editagent.tools import TOOL_TABLE, Tool, ToolError, validate_call

logger = logging.getLogger(__name__)

INSTRUCTIONS = ("editagent keeps what changed in the world: record a changed fact with `edit` (a newer edit on the "
                "same subject and relation replaces the older one), then `ask` questions that depend on it, "
                "multi-hop ones included; every answer lists the edits it used.")
NAMESPACE_SCOPE = "namespace:{}"


def _annotations(tool: Tool) -> types.ToolAnnotations:
    return types.ToolAnnotations(read_only_hint=not tool.writes, destructive_hint=tool.destructive,
                                 idempotent_hint=not tool.writes)


MCP_TOOLS = [types.Tool(name=tool.name, description=tool.description, input_schema=tool.schema(),
                        output_schema=tool.output_schema(), annotations=_annotations(tool))
             for tool in TOOL_TABLE.values()]


class KeyVerifier:
    """The SDK's ``TokenVerifier`` over the store's API keys: a key's scopes are ``read``/``write`` and one
    ``namespace:<name>`` per namespace it holds; its client id is the key's public id (never the key)."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    async def verify_token(self, token: str) -> AccessToken | None:
        key = await anyio.to_thread.run_sync(self.ring.authenticate, token)
        if key is None:
            return None
        scopes = ["read", "write"] if key.scope == "write" else ["read"]
        scopes += [NAMESPACE_SCOPE.format(namespace) for namespace in key.namespaces]
        return AccessToken(token=token, client_id=key.id, scopes=scopes,
                           claims={"editagent_key": key.model_dump(mode="json")})


def _caller(ctx: ServerRequestContext[Any, Any]) -> ApiKey | None:
    """The key this request came with (HTTP with keys), or None (stdio, or HTTP without authentication)."""
    request = ctx.request
    user = request.scope.get("user") if request is not None and hasattr(request, "scope") else None
    if not isinstance(user, AuthenticatedUser):
        return None
    return ApiKey.model_validate((user.access_token.claims or {})["editagent_key"])


def _namespace(fixed: str | None, key: ApiKey | None, tool: Tool) -> str:
    """Where the call acts: the server's namespace, or the only one the caller's key holds."""
    if key is None:
        return fixed or "default"
    namespace = fixed
    if namespace is None:
        if len(key.namespaces) != 1:
            raise ToolError(f"namespace: this key holds {len(key.namespaces)} namespaces; start the server with "
                            "--namespace to say which one it serves")
        namespace = key.namespaces[0]
    refusal = key.refusal(namespace, write=tool.writes)
    if refusal:
        raise ToolError(refusal)
    return namespace


def _text(result: dict[str, Any]) -> list[types.TextContent]:
    return [types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False))]


def build_server(service: Service, *, namespace: str | None = None) -> Server[Any]:
    """The MCP server over ``service``; ``namespace``: the one it serves (None over HTTP: each key's own)."""
    fixed = check_namespace(namespace) if namespace is not None else None

    async def list_tools(_: ServerRequestContext[Any, Any],
                         __: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=MCP_TOOLS)

    async def call_tool(ctx: ServerRequestContext[Any, Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            tool, arguments = validate_call({"name": params.name, "arguments": params.arguments or {}})
            where = _namespace(fixed, _caller(ctx), tool)
            result = await anyio.to_thread.run_sync(partial(service.run, where, tool, arguments))
        except EditError as error:
            logger.info("tool %s refused: %s", params.name[:100], error)
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(error))], is_error=True)
        return types.CallToolResult(content=_text(result), structured_content=result)

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = TOOL_TABLE.get(name)
        return tool.schema() if tool is not None else None

    return Server("editagent", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool, get_tool_input_schema=input_schema)


async def _serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def run_stdio(service: Service, *, namespace: str) -> None:
    """Speak MCP on stdin/stdout until the host closes them."""
    logger.info("MCP over stdio: store %s, namespace %s", service.memory.location, namespace)
    anyio.run(_serve_stdio, build_server(service, namespace=namespace))


class _ErrorShape:
    """The SDK's 401 and 403 (OAuth's ``{"error": "invalid_token", "error_description": ...}``) in the shape of
    every other refusal here, ``{"error": "field: what is wrong"}``; the ``WWW-Authenticate`` header, which OAuth
    clients read, is kept."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def reshaped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 403):
                held["start"] = message
                return
            if "start" not in held:
                await send(message)
                return
            held["body"] = held.get("body", b"") + message.get("body", b"")
            if message.get("more_body"):
                return
            body = json.dumps({"error": _refusal(held["start"]["status"], held["body"])}).encode()
            headers = [(name, value) for name, value in held["start"]["headers"]
                       if name.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**held["start"], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshaped)


def _refusal(status: int, body: bytes) -> str:
    if status == 401:
        return NO_KEY
    try:
        description = json.loads(body).get("error_description") or ""
    except (ValueError, AttributeError):
        description = ""
    return f"authorization: {description or 'this key may not do this'}"


def http_app(service: Service, *, host: str = "127.0.0.1", port: int = 8765, namespace: str | None = None,
             keys: KeyRing | None = None) -> Starlette:
    """The streamable HTTP app (``/mcp``); ``keys=None`` serves without authentication (it warns)."""
    server = build_server(service, namespace=namespace)
    if keys is None:
        logger.warning(INSECURE_WARNING, f"namespace {namespace or 'default'!r}")
        return server.streamable_http_app(host=host)
    warn_without_keys(keys)
    settings = AuthSettings(issuer_url=f"http://{host}:{port}", resource_server_url=None,
                            required_scopes=[NAMESPACE_SCOPE.format(namespace)] if namespace else None)
    app = server.streamable_http_app(host=host, auth=settings, token_verifier=KeyVerifier(keys))
    app.add_middleware(_ErrorShape)
    return app


def run_http(service: Service, *, host: str, port: int, namespace: str | None, keys: KeyRing | None) -> None:
    import uvicorn  # noqa: PLC0415 - only the HTTP transport needs it

    logger.info("MCP over streamable HTTP: store %s on http://%s:%d/mcp", service.memory.location, host, port)
    app = http_app(service, host=host, port=port, namespace=namespace, keys=keys)
    uvicorn.run(app, host=host, port=port, log_level="info")
