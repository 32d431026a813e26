"""A session's byte stream, seen from the client: a WebSocket to the box over Tor."""

from __future__ import annotations

import contextlib
import json
from types import TracebackType

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bento.errors import BentoError
from bento.protocol.messages import Ack, Ended, InputEnd


class SessionStream:
    """Output arrives with ``receive()`` (or ``async for``); input goes with ``send()``.

    Every chunk received is acknowledged at once, so the box can free it; after a
    detach, attaching again resumes right after the last acknowledged byte.
    """

    def __init__(self, websocket: ClientConnection, session_id: str) -> None:
        self._ws = websocket
        self.session_id = session_id
        self.offset = 0  # bytes of output received so far (absolute, from the session's start)
        self.ended: Ended | None = None

    async def receive(self) -> bytes | None:
        """The next output bytes; None once the session has ended (see ``ended``)."""
        if self.ended is not None:
            return None
        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosed as exc:
                raise BentoError(
                    f"the connection to the box closed before session {self.session_id} ended ({exc})",
                    fix=f"attach again with `bento attach {self.session_id}`: no output is lost",
                ) from None
            if isinstance(message, bytes):
                self.offset += len(message)
                await self._ws.send(Ack(offset=self.offset).model_dump_json())
                return message
            event = json.loads(message)
            kind = event.get("type")
            if kind == "attached":
                self.offset = int(event["offset"])
            elif kind == "end":
                self.ended = Ended.model_validate(event)
                return None
            elif "error" in event:
                raise BentoError(event["error"], fix=event.get("fix"))

    def __aiter__(self) -> SessionStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.receive()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def send(self, data: bytes | str) -> None:
        """Bytes for the function's ``api.recv()``."""
        try:
            await self._ws.send(data.encode() if isinstance(data, str) else data)
        except ConnectionClosed:
            raise BentoError(f"session {self.session_id}: the connection to the box is closed") from None

    async def close_input(self) -> None:
        """Tell the function there is no more input (its ``api.recv()`` returns None)."""
        with contextlib.suppress(ConnectionClosed):  # the session is over: nothing awaits input
            await self._ws.send(InputEnd().model_dump_json())

    async def close(self) -> None:
        """Detach. The session runs on at the box; its output waits for the next attach."""
        await self._ws.close()

    async def __aenter__(self) -> SessionStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
