"""The Bento HTTP + WebSocket API (Starlette), served over Tor. See docs/api.md.

Thin on purpose: it authenticates, validates bodies against ``bento.protocol.messages``,
and hands over to the registry. Every refusal is an ``ErrorBody`` with a stable code.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from bento.protocol.messages import (
    Ack,
    Attached,
    ErrorBody,
    InputEnd,
    InvokeRequest,
    InvokeResponse,
    SessionList,
    ShutdownResponse,
    UploadRequest,
    UploadResponse,
)
from bento.protocol.openapi import openapi_document
from bento.server.registry import BoxError, Registry
from bento.server.session import Session

Model = TypeVar("Model", bound=BaseModel)
JSON_LIMIT = 64 << 10  # every request body but an upload is small


def _error(status: int, code: str, message: str, fix: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=message, code=code, fix=fix).model_dump(exclude_none=True), status)


def _bearer(headers: Any) -> str | None:
    value: str = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _body(request: Request, model: type[Model], limit: int) -> Model:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BoxError(413, "body-too-large", f"the request body is over {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise BoxError(413, "body-too-large", f"the request body is over {limit} bytes")
    try:
        return model.model_validate_json(bytes(data), strict=True)  # JSON types as documented: no coercion
    except ValidationError as exc:
        problems = describe_validation(exc)
        raise BoxError(422, "invalid-request", f"malformed {model.__name__}: {problems}") from None


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

    async def get_descriptor(request: Request) -> Response:
        return _json(descriptor())

    async def upload(request: Request) -> Response:
        body = await _body(request, UploadRequest, upload_limit)
        deployed = await registry.deploy(body.manifest, body.kind, body.code)
        return _json(
            UploadResponse(
                function_id=deployed.function.id,
                invocation_token=deployed.invocation_token,
                shutdown_token=deployed.shutdown_token,
                entry_points=deployed.function.entry_points,
                boot_id=registry.boot_id,
            ),
            201,
        )

    async def invoke(request: Request) -> Response:
        function = registry.function(request.path_params["function_id"], _bearer(request.headers))
        body = await _body(request, InvokeRequest, JSON_LIMIT)
        session = registry.invoke(function, body.entry, body.args, body.kwargs)
        return _json(InvokeResponse(session_id=session.id), 201)

    async def list_sessions(request: Request) -> Response:
        function = registry.function(request.path_params["function_id"], _bearer(request.headers))
        sessions = [s.info() for s in function.sessions.values()]
        return _json(SessionList(function_id=function.id, sessions=sessions))

    async def session_info(request: Request) -> Response:
        return _json(registry.session(request.path_params["session_id"], _bearer(request.headers)).info())

    async def shutdown(request: Request) -> Response:
        function = registry.function(
            request.path_params["function_id"], _bearer(request.headers), shutdown=True
        )
        stopped = await registry.shutdown(function)
        return _json(ShutdownResponse(function_id=function.id, sessions_stopped=stopped))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            session = registry.session(websocket.path_params["session_id"], _bearer(websocket.headers))
            if session.output.expired:
                raise BoxError(
                    410,
                    "output-expired",
                    f"the output of session {session.id} was dropped, to keep the box's memory bounded",
                    "attach sooner after invoking: the box keeps a bounded amount of ended sessions' output",
                )
        except BoxError as exc:
            await websocket.send_json(ErrorBody(error=exc.message, code=exc.code, fix=exc.fix).model_dump())
            await websocket.close(1008)
            return
        await _attach(session, websocket)

    async def box_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BoxError)
        return _error(exc.status, exc.code, exc.message, exc.fix)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "no-such-endpoint", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        response = _error(
            exc.status_code,
            code,
            f"{request.method} {request.url.path}: {exc.detail}",
            "see GET /v1/openapi.json for the API",
        )
        response.headers.update(exc.headers or {})  # 405 carries Allow (RFC 9110, 15.5.6)
        return response

    routes = [
        _route("/v1/descriptor", GET=get_descriptor),
        _route("/v1/openapi.json", GET=openapi),
        _route("/v1/functions", POST=upload),
        _route("/v1/functions/{function_id}", DELETE=shutdown),
        _route("/v1/functions/{function_id}/sessions", POST=invoke, GET=list_sessions),
        _route("/v1/sessions/{session_id}", GET=session_info),
        WebSocketRoute("/v1/sessions/{session_id}/stream", stream),
    ]
    return Starlette(routes=routes, exception_handlers={BoxError: box_error, HTTPException: http_error})


async def _attach(session: Session, websocket: WebSocket) -> None:
    """Stream the session's output to this client and its input to the function.

    The newest attachment wins: an older connection (say, one whose network died
    unnoticed) is closed, and output resumes at the last acknowledged byte.
    """
    previous = session.attachment
    session.attachment = websocket
    if isinstance(previous, WebSocket):
        with contextlib.suppress(Exception):
            await previous.close(4001, "another client attached to this session")
    try:
        async with asyncio.TaskGroup() as group:
            sender = group.create_task(_send_output(session, websocket))
            await _receive_input(session, websocket)
            sender.cancel()
    except* (WebSocketDisconnect, ConnectionError, RuntimeError):
        pass  # the client went away; the session runs on, its output buffered
    finally:
        if session.attachment is websocket:
            session.attachment = None


async def _send_output(session: Session, websocket: WebSocket) -> None:
    offset = session.output.acked
    await websocket.send_text(Attached(offset=offset).model_dump_json())
    while True:
        offset = max(offset, session.output.acked)  # a client may acknowledge ahead of us
        data = await session.output.read(offset)
        if data is None:
            break
        await websocket.send_bytes(data)
        offset += len(data)
    await websocket.send_text(session.ended_event().model_dump_json())


async def _receive_input(session: Session, websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await session.send_input(message["bytes"])
        elif message.get("text") is not None:
            await _control(session, message["text"])


async def _control(session: Session, text: str) -> None:
    for model in (Ack, InputEnd):
        try:
            event = model.model_validate_json(text)
        except ValidationError:
            continue
        if isinstance(event, Ack):
            session.output.ack(event.offset)
        else:
            await session.close_input()
        return
    # Unknown control messages are ignored: newer clients may send more.
