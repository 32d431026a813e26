"""The Bento HTTP + WebSocket API (Starlette), served over Tor. See docs/api.md.

Thin on purpose: it authenticates, validates bodies against ``bento.protocol.messages``,
and hands over to the registry. Every refusal is an ``ErrorBody`` with a stable code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bento.errors import describe_validation
from bento.protocol.descriptor import SignedDescriptor
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import (
    BlindTokenKey,
    BlindTokenRequest,
    BlindTokenResponse,
    ErrorBody,
    Invoked,
    InvokeRequest,
    InvokeResponse,
    SessionList,
    SessionLogs,
    ShutdownResponse,
    UploadRequest,
    UploadResponse,
)
from bento.protocol.openapi import openapi_document
from bento.protocol.private_token import Right, TokenError, is_blinded
from bento.server import cover, tokens
from bento.server.attachment import attach
from bento.server.cover import StreamSocket
from bento.server.function import Function
from bento.server.refusal import BoxError
from bento.server.registry import Registry

Model = TypeVar("Model", bound=BaseModel)
JSON_LIMIT = 64 << 10  # every request body but an upload is small
FIRST_MESSAGE_TIMEOUT = 60.0  # seconds a WebSocket invocation may take to send its request
MAX_NAMED_RIGHTS = 64  # session rights one listing may name


def _error(code: ErrorCode, message: str, fix: str | None = None, status: int | None = None) -> JSONResponse:
    body = ErrorBody(error=message, code=code, fix=fix).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status or code.status)


def _bearer(headers: Any) -> str | None:
    value: str = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _body(request: Request, model: type[Model], limit: int) -> Model:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BoxError(ErrorCode.BODY_TOO_LARGE, f"the request body is over {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise BoxError(ErrorCode.BODY_TOO_LARGE, f"the request body is over {limit} bytes")
    try:
        return model.model_validate_json(bytes(data), strict=True)  # JSON types as documented: no coercion
    except ValidationError as exc:
        problems = describe_validation(exc)
        raise BoxError(ErrorCode.INVALID_REQUEST, f"malformed {model.__name__}: {problems}") from None


Endpoint = Callable[[Request], Awaitable[Response]]


def _route(path: str, **by_method: Endpoint) -> Route:
    """One route per path, whatever its methods: so a 405 names every method the path has."""
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]

    async def endpoint(request: Request) -> Response:
        return await by_method[request.method](request)

    return Route(path, endpoint, methods=list(by_method))


def _json(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status)


def create_app(registry: Registry, descriptor: Callable[[], SignedDescriptor]) -> Starlette:
    upload_limit = registry.policy.max_upload_bytes * 4 // 3 + JSON_LIMIT  # base64, plus the manifest
    cover_budget = cover.CoverBudget(registry.policy.cover)

    async def get_descriptor(request: Request) -> Response:
        return _json(descriptor())

    async def upload(request: Request) -> Response:
        registry.refuse_if_paused("uploads")  # before the body: up to max_upload_bytes, all for nothing
        body = await _body(request, UploadRequest, upload_limit)
        deployed = await registry.deploy(body.manifest, body.kind, body.code, body.replaces)
        return _json(
            UploadResponse(
                function_id=deployed.function.id,
                invocation_token=deployed.invocation_token,
                shutdown_token=deployed.shutdown_token,
                entry_points=deployed.function.entry_points,
                boot_id=registry.boot_id,
                replaced=deployed.replaced,
            ),
            201,
        )

    async def invoke(request: Request) -> Response:
        token = _bearer(request.headers)
        function = registry.function(request.path_params["function_id"], token, spend=True)
        body = await _body(request, InvokeRequest, JSON_LIMIT)
        right = tokens.new_token()
        session = registry.invoke(function, body.entry, body.args, body.kwargs, opened_by=token, right=right)
        return _json(InvokeResponse(session_id=session.id, session_right=right), 201)

    def issuer_of(request: Request, right: str) -> Function:
        """The function whose right's blinded tokens are asked for; the plain token is needed."""
        if right not in ("invoke", "shutdown"):
            raise BoxError(
                ErrorCode.INVALID_REQUEST, f"there are no {right[:20]!r} tokens: invoke or shutdown"
            )
        token = _bearer(request.headers)
        if token is not None and is_blinded(token):
            raise BoxError(ErrorCode.WRONG_TOKEN, "blinded tokens are issued for the plain token only")
        function_id = request.path_params["function_id"]
        return registry.function(function_id, token, shutdown=right == "shutdown", narrowed=False)

    async def token_key(function: Function, right: Right) -> BlindTokenKey:
        spki, key_id = await function.issuer.public_key(right)
        return BlindTokenKey(right=right, token_key=base64.b64encode(spki).decode(), key_id=key_id.hex())

    async def blind_token_key(request: Request) -> Response:
        right = request.path_params["right"]
        return _json(await token_key(issuer_of(request, right), right))

    async def blind_tokens(request: Request) -> Response:
        function = issuer_of(request, request.path_params["right"])
        body = await _body(request, BlindTokenRequest, JSON_LIMIT)
        if body.right != request.path_params["right"]:
            raise BoxError(ErrorCode.INVALID_REQUEST, "the body's right differs from the path's")
        try:
            signatures = await function.issuer.sign(body.right, [base64.b64decode(b) for b in body.blinded])
        except TokenError as exc:
            raise BoxError(ErrorCode.BAD_BLINDED_TOKEN, str(exc)) from None
        key = await token_key(function, body.right)
        encoded = [base64.b64encode(s).decode() for s in signatures]
        return _json(BlindTokenResponse(**key.model_dump(), blind_signatures=encoded))

    async def list_sessions(request: Request) -> Response:
        """The owner (shutdown token) sees every session; an invoker only those whose rights it names."""
        function_id, token = request.path_params["function_id"], _bearer(request.headers)
        try:
            function = registry.function(function_id, token, shutdown=True)
            listed = list(function.sessions.values())
        except BoxError as refused:
            if refused.code is not ErrorCode.WRONG_TOKEN:
                raise
            try:
                function = registry.function(function_id, token)
            except BoxError as wrong:
                wrong.message = (
                    f"that is neither the shutdown nor the invocation token of function {function_id}"
                )
                raise
            named = _session_rights(request.headers)
            listed = [s for s in function.sessions.values() if s.right_digest in named]
        return _json(SessionList(function_id=function.id, sessions=[s.info() for s in listed]))

    async def session_info(request: Request) -> Response:
        token = _bearer(request.headers)
        return _json(registry.session(request.path_params["session_id"], token, content=False).info())

    async def kill_session(request: Request) -> Response:
        session = registry.session(request.path_params["session_id"], _bearer(request.headers), content=False)
        return _json(await registry.kill(session))

    async def shutdown(request: Request) -> Response:
        function = registry.function(
            request.path_params["function_id"], _bearer(request.headers), shutdown=True, spend=True
        )
        if is_blinded(token := _bearer(request.headers) or ""):
            registry.hold(function, token, "shutdown").spend()
        stopped = await registry.shutdown(function)
        return _json(ShutdownResponse(function_id=function.id, sessions_stopped=stopped))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def session_logs(request: Request) -> Response:
        session = registry.session(request.path_params["session_id"], _bearer(request.headers))
        logs = SessionLogs(
            session_id=session.id,
            dropped=session.logs.dropped,
            total=session.logs.total,
            logs=session.logs.since(0),
        )
        return _json(logs)

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            session = registry.session(websocket.path_params["session_id"], _bearer(websocket.headers))
            if session.output.expired:
                raise BoxError(
                    ErrorCode.OUTPUT_EXPIRED,
                    f"the output of session {session.id} was dropped, to keep the box's memory bounded",
                    "attach sooner after invoking: the box keeps a bounded amount of ended sessions' output",
                )
            logs_from = _logs_from(websocket)
            wanted = cover.requested(websocket.headers, registry.policy.cover)
            if wanted is not None:
                async with cover_budget.covering(websocket, wanted) as covered:
                    await attach(session, covered, logs_from)
                return
        except BoxError as exc:
            await _refuse(websocket, exc)
            return
        await attach(session, websocket, logs_from)

    async def invoke_stream(websocket: WebSocket) -> None:
        """Invoke and attach in one round trip: the invocation comes with the upgrade request
        (with cover: the token is checked, the cover begins, and the invocation comes inside it)."""
        await websocket.accept()
        try:
            wanted = cover.requested(websocket.headers, registry.policy.cover)
            if wanted is not None:  # no cover for whoever cannot invoke (a blinded token is not spent yet)
                registry.function(
                    websocket.path_params["function_id"], _bearer(websocket.headers), spend=True
                )
                async with cover_budget.covering(websocket, wanted) as covered:
                    await _invoke_and_attach(websocket, covered)
                return
        except BoxError as exc:
            await _refuse(websocket, exc)
            return
        await _invoke_and_attach(websocket, websocket)

    async def _invoke_and_attach(websocket: WebSocket, socket: StreamSocket) -> None:
        try:
            token = _bearer(websocket.headers)
            body = await _invocation(websocket, socket)  # before the token is spent: a bad request costs none
            function = registry.function(websocket.path_params["function_id"], token, spend=True)
            right = tokens.new_token()
            session = registry.invoke(
                function, body.entry, body.args, body.kwargs, opened_by=token, right=right
            )
        except BoxError as exc:
            await _refuse(socket, exc)
            return
        except (WebSocketDisconnect, ConnectionError, RuntimeError):
            return  # the client left before it said what to invoke
        await socket.send_text(Invoked(session_id=session.id, session_right=right).model_dump_json())
        await attach(session, socket, 0)

    async def box_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BoxError)
        return _error(exc.code, exc.message, exc.fix)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: ErrorCode.NO_SUCH_ENDPOINT, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorCode.HTTP_ERROR
        )
        response = _error(
            code,
            f"{request.method} {request.url.path}: {exc.detail}",
            "see GET /v1/openapi.json for the API",
            exc.status_code,
        )
        response.headers.update(exc.headers or {})  # 405 carries Allow (RFC 9110, 15.5.6)
        return response

    routes = [
        _route("/v1/descriptor", GET=get_descriptor),
        _route("/v1/openapi.json", GET=openapi),
        _route("/v1/functions", POST=upload),
        _route("/v1/functions/{function_id}", DELETE=shutdown),
        _route("/v1/functions/{function_id}/sessions", POST=invoke, GET=list_sessions),
        _route("/v1/functions/{function_id}/blind-tokens/{right}", GET=blind_token_key, POST=blind_tokens),
        _route("/v1/sessions/{session_id}", GET=session_info, DELETE=kill_session),
        _route("/v1/sessions/{session_id}/logs", GET=session_logs),
        WebSocketRoute("/v1/sessions/{session_id}/stream", stream),
        WebSocketRoute("/v1/functions/{function_id}/invoke", invoke_stream),
    ]
    return Starlette(routes=routes, exception_handlers={BoxError: box_error, HTTPException: http_error})


async def _refuse(websocket: StreamSocket, exc: BoxError) -> None:
    body = ErrorBody(error=exc.message, code=exc.code, fix=exc.fix)
    await websocket.send_text(body.model_dump_json())
    await websocket.close(1008)


def _session_rights(headers: Any) -> set[bytes]:
    """Digests of the session rights named in ``Bento-Session-Rights`` (comma-separated)."""
    named = [r.strip() for r in headers.get("bento-session-rights", "").split(",") if r.strip()]
    if len(named) > MAX_NAMED_RIGHTS or any(len(r) > 64 for r in named):
        raise BoxError(
            ErrorCode.INVALID_REQUEST,
            f"Bento-Session-Rights names at most {MAX_NAMED_RIGHTS} session rights of 43 characters",
        )
    return {tokens.digest(r) for r in named}


def _logs_from(websocket: WebSocket) -> int:
    raw = websocket.query_params.get("logs_from", "0")
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise BoxError(ErrorCode.INVALID_REQUEST, f"logs_from must be a byte offset, not {raw[:40]!r}")
    return int(raw)


async def _invocation(websocket: WebSocket, socket: StreamSocket) -> InvokeRequest:
    """The InvokeRequest: base64url JSON in the ``Bento-Invocation`` header, else socket's first message."""
    header = websocket.headers.get("bento-invocation")
    try:
        if header is not None:
            raw = base64.urlsafe_b64decode(header.encode("ascii"))
        else:
            async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
                message = await socket.receive()
            raw = (message.get("text") or "").encode() or message.get("bytes") or b""
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise BoxError(ErrorCode.INVALID_REQUEST, "Bento-Invocation is not base64url") from None
    except TimeoutError:
        raise BoxError(ErrorCode.INVALID_REQUEST, "no invocation arrived in time") from None
    if len(raw) > JSON_LIMIT:
        raise BoxError(ErrorCode.BODY_TOO_LARGE, f"the invocation is over {JSON_LIMIT} bytes")
    try:
        return InvokeRequest.model_validate_json(raw)
    except ValidationError as exc:
        problems = describe_validation(exc)
        raise BoxError(ErrorCode.INVALID_REQUEST, f"malformed InvokeRequest: {problems}") from None
