"""The admin interface: HTTP over a Unix socket only the box's operator can open.

Why a Unix socket and not cookie authentication on loopback: the kernel checks who
connects, so there is no secret to keep, leak or rotate, and no port another local user
could probe. The socket is ``state_dir/admin.sock``, mode 0600, owned by the server's
user (bound under a private name, made 0600, then renamed into place, so it is never
reachable with looser rights); the state directory itself is 0700. ``bento box``
speaks to it; so can ``curl --unix-socket``:

    curl --unix-socket /var/lib/bento/admin.sock http://box/v1/functions

Every body is a strict model (``admin.models``); every refusal an ``ErrorBody`` with a
stable code and a fix, as on the public API.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import uvicorn
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bento.errors import BentoError, describe_validation
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import ErrorBody
from bento.server.admin.models import PauseRequest
from bento.server.admin.view import OperatorView
from bento.server.embedded_uvicorn import EmbeddedUvicorn, serving
from bento.server.refusal import BoxError
from bento.server.registry import Registry

SOCKET_NAME = "admin.sock"
BODY_LIMIT = 4096  # the largest admin request is a pause: a few words


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def _json(model: BaseModel) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"))


async def _pause_request(request: Request) -> PauseRequest:
    body = await request.body()
    if len(body) > BODY_LIMIT:
        raise BoxError(ErrorCode.BODY_TOO_LARGE, f"the request body is over {BODY_LIMIT} bytes")
    try:
        return PauseRequest.model_validate_json(body or b"{}", strict=True)
    except ValidationError as exc:
        raise BoxError(
            ErrorCode.INVALID_REQUEST, f"malformed PauseRequest: {describe_validation(exc)}"
        ) from None


def create_admin_app(registry: Registry) -> Starlette:
    view = OperatorView(registry)

    async def functions(request: Request) -> Response:
        return _json(view.functions())

    async def sessions(request: Request) -> Response:
        return _json(view.sessions())

    async def usage(request: Request) -> Response:
        return _json(view.usage())

    async def kill(request: Request) -> Response:
        return _json(await view.kill(request.path_params["session_id"]))

    async def evict(request: Request) -> Response:
        return _json(await view.evict(request.path_params["function_id"]))

    async def pause(request: Request) -> Response:
        return _json(view.pause((await _pause_request(request)).what))

    async def resume(request: Request) -> Response:
        return _json(view.resume((await _pause_request(request)).what))

    async def box_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BoxError)
        body = ErrorBody(error=exc.message, code=exc.code, fix=exc.fix)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), exc.status)

    Endpoint = Callable[[Request], Awaitable[Response]]
    table: list[tuple[str, str, Endpoint]] = [
        ("GET", "/v1/functions", functions),
        ("GET", "/v1/sessions", sessions),
        ("GET", "/v1/usage", usage),
        ("POST", "/v1/sessions/{session_id}/kill", kill),
        ("POST", "/v1/functions/{function_id}/evict", evict),
        ("POST", "/v1/pause", pause),
        ("POST", "/v1/resume", resume),
    ]
    routes = [Route(path, endpoint, methods=[method]) for method, path, endpoint in table]
    return Starlette(routes=routes, exception_handlers={BoxError: box_error})


def bind_admin_socket(state_dir: Path) -> socket.socket:
    """``state_dir/admin.sock``, listening, mode 0600 from before anyone can reach it."""
    path = socket_path(state_dir)
    private = path.with_name(f".{SOCKET_NAME}.{os.getpid()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            private.unlink()
        sock.bind(str(private))
        os.chmod(private, 0o600)
        os.replace(private, path)  # a stale socket of an earlier run goes
    except OSError as exc:
        sock.close()
        raise BentoError(
            f"cannot make the admin socket {path}: {exc}",
            fix="the server's user must own its state directory (StateDirectory= in the unit)",
        ) from None
    sock.listen(16)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def admin_socket(registry: Registry, state_dir: Path) -> AsyncIterator[Path]:
    """Serve the admin interface inside this block; the socket is removed on the way out."""
    sock = bind_admin_socket(state_dir)
    server = EmbeddedUvicorn(
        uvicorn.Config(create_admin_app(registry), log_level="warning", access_log=False, lifespan="off")
    )
    try:
        async with serving(server, [sock]):
            yield socket_path(state_dir)
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path(state_dir).unlink()
