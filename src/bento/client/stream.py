"""A session's byte stream, seen from the client: a WebSocket to the box, re-attached when it drops.

Output is delivered exactly once: every chunk is acknowledged as it is taken in, and
when the connection drops (a circuit collapses, the box is slow under load) the stream
attaches again by itself, with bounded retries and backoff, and skips what the box
sends twice. The caller sees a pause, not an error, unless the box stays unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import anyio
import httpcore
import wsproto
from httpx_ws import AsyncWebSocketSession, HTTPXWSException, WebSocketDisconnect, WebSocketNetworkError
from pydantic import ValidationError

from bento.errors import BentoError, ConnectionLost, ProtocolError, Refused
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import Ack, Ended, InputEnd, Log

# Close codes after which attaching again would not help (or would fight another client).
_FINAL_CLOSES = {1008: "the box refused the stream", 4001: "another client attached to this session"}
_LINK_ERRORS = (HTTPXWSException, httpcore.NetworkError, wsproto.utilities.LocalProtocolError, OSError)


@dataclass(frozen=True)
class Retry:
    """How hard a stream tries to re-attach after its connection drops."""

    attempts: int = 6
    first_delay: float = 0.5  # seconds; doubles after each failed try
    max_delay: float = 8.0

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        for _ in range(self.attempts):
            yield delay
            delay = min(delay * 2, self.max_delay)


class Messages(Protocol):
    """What a stream needs of its WebSocket: httpx-ws's session, or a covered one (client.cover)."""

    async def receive(self) -> wsproto.events.Event: ...

    async def receive_text(self) -> str: ...

    async def send_text(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...


class Link:
    """One open WebSocket of a stream, and what closes it."""

    def __init__(self, ws: AsyncWebSocketSession, stack: contextlib.AsyncExitStack) -> None:
        self.raw, self._stack = ws, stack
        self.ws: Messages = ws
        self.failed = False  # a send on it failed: it is dead, whatever its reader says

    def broken(self) -> bool:
        """Its background reader failed (httpx-ws then cancels the scope its user runs in)."""
        return bool(self.raw._background_task_group.cancel_scope.cancel_called)

    def fail(self) -> None:
        """A send on this link failed. httpx-ws then closes the session and its background
        reader stops without a word to whoever waits in ``receive()``, who would wait for
        ever (seen: an ack lost as a circuit collapsed hung the stream). So the link is
        marked dead, and a reader waiting now is woken with the network error it missed."""
        self.failed = True
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.raw._send_event.send_nowait(WebSocketNetworkError())

    async def finish(self) -> None:
        """Close, when the client is done with the stream (a covered link covers its tail first)."""
        await self.close()

    async def close(self) -> None:
        # A link that died takes its background tasks' errors with it: they are why we left.
        with contextlib.suppress(Exception, BaseExceptionGroup):
            await self._stack.aclose()


Attach = Callable[[int], Awaitable[Link]]  # log offset -> a new link to the session's stream
Reconnecting = Callable[[int, BaseException], None]  # (attempt, why) -> None, e.g. to tell the user


class SessionStream:
    """Output arrives with ``receive()`` (or ``async for``); input goes with ``send()``.

    Logs (what the function printed) arrive apart, in ``logs`` and to ``on_log``. After
    the session ends, ``ended`` holds its result. Use it from one task (input may be sent
    from another).
    """

    def __init__(
        self,
        link: Link,
        session_id: str,
        attach: Attach,
        *,
        retry: Retry | None = None,
        on_log: Callable[[Log], None] | None = None,
        on_reconnect: Reconnecting | None = None,
    ) -> None:
        self._link = link
        self.session_id = session_id
        self._attach = attach
        self.retry = retry or Retry()
        self.on_log = on_log
        self.on_reconnect = on_reconnect
        self.offset = 0  # output bytes taken in (absolute, from the session's start)
        self.log_offset = 0  # log bytes taken in
        self.logs: list[Log] = []
        self.reattached = 0  # how many times the connection dropped and came back
        self.ended: Ended | None = None
        self._skip = 0  # bytes the box is about to send again (their ack was lost)
        self._changed = asyncio.Condition()

    @property
    def link(self) -> Link:
        """The connection in use now (a new one after each re-attach)."""
        return self._link

    async def receive(self) -> bytes | None:
        """The next output bytes; None once the session has ended (see ``ended``)."""
        while self.ended is None:
            link = self._link
            if link.failed:
                await self._reattach(ConnectionLost("a send to the box failed"))
                continue
            try:
                event = await link.ws.receive()
                data = await self._take(link, event)
            except WebSocketDisconnect as exc:
                if exc.code in _FINAL_CLOSES:
                    raise ConnectionLost(
                        f"session {self.session_id}: {_FINAL_CLOSES[exc.code]}",
                        fix=f"attach again with `bento attach {self.session_id}` if you want it back",
                    ) from None
                await self._reattach(exc)
                continue
            except _LINK_ERRORS as exc:
                await self._reattach(exc)
                continue
            except asyncio.CancelledError:
                if not link.broken():
                    raise  # a real cancellation: ours to pass on
                await self._reattach(ProtocolError("the WebSocket to the box failed"))
                continue
            if data:
                return data
        return None

    async def _take(self, link: Link, event: wsproto.events.Event) -> bytes | None:
        if isinstance(event, wsproto.events.BytesMessage):
            data = bytes(event.data)
            if self._skip:  # delivered before, on a connection that died before its ack arrived
                dropped = min(self._skip, len(data))
                data, self._skip = data[dropped:], self._skip - dropped
            if data:
                self.offset += len(data)
                try:
                    await link.ws.send_text(Ack(offset=self.offset).model_dump_json())
                except _LINK_ERRORS:
                    # The bytes are ours either way: the ack is lost with the link, the box
                    # sends them again after the re-attach, and we skip them.
                    link.fail()
            return data
        if isinstance(event, wsproto.events.TextMessage):
            self._event(str(event.data))
        return None

    def _event(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            raise ProtocolError(f"session {self.session_id}: the box sent a malformed event") from None
        if not isinstance(event, dict):
            raise ProtocolError(f"session {self.session_id}: the box sent a malformed event")
        kind = event.get("type")
        try:
            if kind == "attached":
                offset = int(event["offset"])
                self._skip = max(0, self.offset - offset)
                self.offset = max(self.offset, offset)  # beyond ours: another client took those bytes
            elif kind == "log":
                self._log(Log.model_validate(event))
            elif kind == "end":
                self.ended = Ended.model_validate(event)
            elif "error" in event:
                raise Refused.from_body(ErrorCode.status_of(event.get("code", ErrorCode.HTTP_ERROR)), event)
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            if isinstance(exc, Refused):
                raise
            raise ProtocolError(f"session {self.session_id}: the box sent a malformed {kind} event") from None

    def _log(self, log: Log) -> None:
        size = len(log.text.encode())
        if log.offset + size <= self.log_offset:
            return  # seen before this re-attach
        self.log_offset = log.offset + size
        self.logs.append(log)
        if self.on_log is not None:
            self.on_log(log)

    async def _reattach(self, why: BaseException) -> None:
        """Attach again after the connection dropped; output resumes after our last ack."""
        await self._link.close()
        for attempt, delay in enumerate(self.retry.delays(), 1):
            if self.on_reconnect is not None:
                self.on_reconnect(attempt, why)
            await asyncio.sleep(delay)  # backoff: give the circuit (or the box) time to come back
            try:
                link = await self._attach(self.log_offset)
            except Refused:
                raise  # the session is gone, or the token no longer works: retrying cannot help
            except BentoError as exc:
                why = exc
                continue
            async with self._changed:
                self._link = link
                self.reattached += 1
                self._changed.notify_all()
            return
        raise ConnectionLost(
            f"lost the connection to session {self.session_id} and could not attach again "
            f"({self.retry.attempts} tries): {why}",
            fix=f"the session goes on at the box: `bento attach {self.session_id}` when it is reachable",
        ) from None

    def __aiter__(self) -> SessionStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.receive()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def send(self, data: bytes | str) -> None:
        """Bytes for the function's ``api.recv()``. If the connection drops meanwhile, they go
        again on the next one: input is delivered at least once, output exactly once."""
        payload = data.encode() if isinstance(data, str) else data
        while self.ended is None:
            link = self._link
            try:
                await link.ws.send_bytes(payload)
                return
            except _LINK_ERRORS:
                link.fail()
                await self._next_link(link)

    async def close_input(self) -> None:
        """Tell the function there is no more input (its ``api.recv()`` returns None)."""
        while self.ended is None:
            link = self._link
            try:
                await link.ws.send_text(InputEnd().model_dump_json())
                return
            except _LINK_ERRORS:
                link.fail()
                await self._next_link(link)

    async def _next_link(self, dead: Link) -> None:
        """Wait until the reading side has attached again (it owns re-attaching)."""
        budget = sum(self.retry.delays()) + 120 * self.retry.attempts
        async with asyncio.timeout(budget), self._changed:
            await self._changed.wait_for(lambda: self._link is not dead or self.ended is not None)

    async def close(self) -> None:
        """Detach. The session runs on at the box; its output waits for the next attach."""
        await self._link.finish()

    async def __aenter__(self) -> SessionStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
