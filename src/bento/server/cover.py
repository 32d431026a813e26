"""Link cover at the box: a session's WebSocket at a constant cell rate (see docs/api.md).

A client asks for it with the ``Bento-Cover`` header of the stream's upgrade request
(:class:`bento.protocol.cover.CoverRequest`, base64url JSON). The box checks it against its
``policy.cover`` (:func:`requested`) and its budget of cells per second for all covered
streams (:class:`CoverBudget`), and then serves the session through a
:class:`CoveredSocket`: the same four calls as Starlette's ``WebSocket`` (``send_text``,
``send_bytes``, ``receive``, ``close``), every message inside cover frames.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from bento.errors import describe_validation, teardown
from bento.protocol.cover import BYTES, HEADER, TEXT, CoverError, CoverRequest, frame_size
from bento.protocol.cover_channel import CoverChannel
from bento.protocol.errors import ErrorCode
from bento.protocol.policy import CoverPolicy
from bento.server.refusal import BoxError

CLOSE_FLUSH = 10.0  # seconds a closing covered socket waits for its last records to leave
# What closing a WebSocket whose client went raises: Starlette's disconnect, its RuntimeError
# for a second close, uvicorn's ClientDisconnected (an OSError), a broken transport.
CLOSED = (WebSocketDisconnect, RuntimeError, OSError)


class StreamSocket(Protocol):
    """What the session stream needs of its WebSocket: Starlette's, or a covered one."""

    async def send_text(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> Mapping[str, Any]: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


def requested(headers: Mapping[str, str], policy: CoverPolicy | None) -> CoverRequest | None:
    """The cover the upgrade request asks for (None: none), if the box's policy allows it."""
    raw = headers.get(HEADER.lower())
    if raw is None:
        return None
    try:
        request = CoverRequest.model_validate_json(base64.urlsafe_b64decode(raw.encode("ascii")))
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        problem = describe_validation(exc) if isinstance(exc, ValidationError) else "not base64url JSON"
        raise BoxError(ErrorCode.INVALID_REQUEST, f"malformed {HEADER}: {problem}") from None
    fix = "ask for less (the box's descriptor shows policy.cover), or use another box"
    if policy is None:
        raise BoxError(ErrorCode.COVER_REFUSED, "this box covers no session streams", "use another box")
    if request.rate > policy.max_rate:
        raise BoxError(
            ErrorCode.COVER_REFUSED,
            f"cover at {request.rate} cells/s is over this box's limit of {policy.max_rate} cells/s",
            fix,
        )
    if request.linger > policy.max_linger:
        raise BoxError(
            ErrorCode.COVER_REFUSED,
            f"cover lingering {request.linger:g} s after the session is over this box's "
            f"{policy.max_linger:g} s",
            fix,
        )
    return request


class CoverBudget:
    """Cells per second of all covered streams together, held while each stream is open."""

    def __init__(self, policy: CoverPolicy | None) -> None:
        self.most = policy.max_total_rate if policy is not None else 0
        self.rate = 0

    @contextlib.contextmanager
    def reserve(self, request: CoverRequest) -> Any:
        if self.rate + request.rate > self.most:
            raise BoxError(
                ErrorCode.COVER_FULL,
                f"this box already covers {self.rate} cells/s of its {self.most}",
                "try again later, at a lower rate, or on another box",
            )
        self.rate += request.rate
        try:
            yield
        finally:
            self.rate -= request.rate

    @contextlib.asynccontextmanager
    async def covering(self, websocket: WebSocket, request: CoverRequest) -> AsyncIterator[CoveredSocket]:
        """The covered socket, its rate reserved and its pacer and reader running, for the block."""
        with self.reserve(request):
            async with covered(websocket, request) as socket:
                yield socket


class CoveredSocket:
    """A Starlette WebSocket whose every message travels in cover frames at a constant rate."""

    def __init__(self, websocket: WebSocket, request: CoverRequest) -> None:
        self.websocket, self.request = websocket, request
        self.channel = CoverChannel(
            websocket.send_bytes,
            self._receive_raw,
            period=request.period,
            frame_size=frame_size(request.burst),
        )

    async def _receive_raw(self) -> bytes | None:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is None:
            raise CoverError("a text message in a covered stream (every message must be a cover frame)")
        return bytes(data)

    async def send_text(self, data: str) -> None:
        await self._send(TEXT, data.encode())

    async def send_bytes(self, data: bytes) -> None:
        await self._send(BYTES, data)

    async def _send(self, kind: int, data: bytes) -> None:
        try:
            await self.channel.send(kind, data)
        except CoverError:
            raise
        except Exception:
            raise WebSocketDisconnect(1006) from None  # the link broke: as Starlette says it

    async def receive(self) -> Mapping[str, Any]:
        try:
            got = await self.channel.receive()
        except CoverError as exc:
            with teardown("closing a stream that broke the cover protocol", *CLOSED):
                await self.websocket.close(1008, f"broke the cover protocol: {exc}"[:120])
            return {"type": "websocket.disconnect", "code": 1008}
        except Exception:
            return {"type": "websocket.disconnect", "code": 1006}
        if got is None:
            return {"type": "websocket.disconnect", "code": 1000}
        kind, data = got
        if kind == BYTES:
            return {"type": "websocket.receive", "bytes": data}
        try:
            return {"type": "websocket.receive", "text": data.decode()}
        except UnicodeDecodeError:
            await self.websocket.close(1008, "a text record that is not UTF-8")
            return {"type": "websocket.disconnect", "code": 1008}

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close once what is queued has left in frames (a refusal must reach the client)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_FLUSH):
                await self.channel.flush()
        with teardown("closing a covered stream", *CLOSED):
            await self.websocket.close(code, reason)

    async def linger(self, ended: asyncio.Event) -> None:
        """After the session ended, cover for ``linger`` s at most, then close: the client should
        close first, when its own cover window is over."""
        await ended.wait()
        await asyncio.sleep(self.request.linger)
        await self.close(1000, "the cover window is over")
        raise WebSocketDisconnect(1000)


@contextlib.asynccontextmanager
async def covered(websocket: WebSocket, request: CoverRequest) -> AsyncIterator[CoveredSocket]:
    """The covered socket, its pacer and reader running until the block is left."""
    socket = CoveredSocket(websocket, request)
    async with socket.channel:
        yield socket
