"""Link cover from the client's side: the options, and a covered session link.

>>> cover = Cover(rate=200, lead=2, duration=20, tail=2)
>>> cover.request().rate, cover.request().linger
(200, 30.0)
>>> round(cover.bytes_per_second() / 1000)  # wire bytes each way, that a watcher sees
103

A covered link starts its cover window when it opens: frames flow both ways at once, the
invocation follows after ``lead`` seconds, and the window closes at
``max(start + duration, done + tail)``, ``done`` being when the client is done with the
stream (``SessionStream.close``). See :mod:`bento.protocol.cover` for the frames.
"""

from __future__ import annotations

import base64
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import wsproto
from httpx_ws import AsyncWebSocketSession

from bento.client.stream import Link
from bento.errors import BentoError, ProtocolError
from bento.protocol.cover import (
    BYTES,
    CELL_BYTES,
    HEADER,
    MAX_LEAD,
    TEXT,
    CoverError,
    CoverRequest,
    frame_size,
)
from bento.protocol.cover_channel import Clock, CoverChannel, MonotonicClock
from bento.protocol.descriptor import Descriptor


@dataclass(frozen=True)
class Cover:
    """Link cover for one session: ``rate`` cells/s each way, ``burst`` cells a frame, and the window."""

    rate: int
    burst: int = 1
    lead: float = 1.0  # seconds of cover before the invocation is sent
    duration: float = 0.0  # the least length of the window, from its start
    tail: float = 1.0  # the least cover after the client is done with the stream

    def __post_init__(self) -> None:
        if not 0 <= self.lead <= MAX_LEAD:
            raise BentoError(f"a cover lead of {self.lead:g} s: it must be 0 to {MAX_LEAD:g} s")
        if self.duration < 0 or self.tail < 0:
            raise BentoError("a cover window's duration and tail cannot be negative")

    def request(self) -> CoverRequest:
        try:
            return CoverRequest(rate=self.rate, burst=self.burst, linger=max(self.duration, self.tail) + 10)
        except ValueError as exc:
            raise BentoError(
                f"cannot ask for cover at {self.rate} cells/s, {self.burst} a frame: {exc}",
                fix="give a positive rate and a burst of 1 to 64 cells",
            ) from None

    def header(self) -> dict[str, str]:
        encoded = base64.urlsafe_b64encode(self.request().model_dump_json().encode()).decode()
        return {HEADER: encoded}

    def bytes_per_second(self) -> int:
        return self.rate * CELL_BYTES

    def check(self, descriptor: Descriptor, box: str) -> None:
        """Refuse, before anything is sent, cover that the box's descriptor says it will refuse."""
        policy = descriptor.policy.cover
        request = self.request()
        if policy is None:
            raise BentoError(
                f"the box {box} covers no session streams (its descriptor has no policy.cover)",
                fix="choose a box that does: `bento descriptor BOX --json` shows policy.cover",
            )
        if request.rate > policy.max_rate:
            raise BentoError(
                f"the box {box} covers at most {policy.max_rate} cells/s; {request.rate} asked for",
                fix=f"ask for --cover {policy.max_rate} or less, or choose another box",
            )
        if request.linger > policy.max_linger:
            raise BentoError(
                f"the box {box} covers at most {policy.max_linger:g} s after a session; the window "
                f"asks for {request.linger:g} s",
                fix="shorten the cover window (its duration and tail)",
            )


class _Messages:
    """The session's messages over a cover channel, with the face of httpx-ws's session."""

    def __init__(self, ws: AsyncWebSocketSession, channel_of: Any) -> None:
        self.raw = ws
        self.covered = False  # a frame has arrived: from now on, nothing travels outside them
        self.outside: list[str] = []  # a refusal the box sent before its cover began
        self.channel: CoverChannel = channel_of(self)

    async def receive_raw(self) -> bytes | None:
        while True:
            event = await self.raw.receive()
            if isinstance(event, wsproto.events.BytesMessage):
                self.covered = True
                return bytes(event.data)
            if isinstance(event, wsproto.events.TextMessage):
                if self.covered:
                    raise CoverError("the box sent a message outside the cover frames")
                self.channel.deliver_outside(event.data.encode())  # a refusal, before cover began

    async def receive(self) -> wsproto.events.Event:
        try:
            got = await self.channel.receive()
        except CoverError as exc:
            raise ProtocolError(f"the box broke the cover protocol: {exc}") from None
        if got is None:
            raise OSError("the box closed the covered stream")
        kind, data = got
        if kind == BYTES:
            return wsproto.events.BytesMessage(data=data)
        return wsproto.events.TextMessage(data=data.decode(errors="replace"))

    async def receive_text(self) -> str:
        event = await self.receive()
        if not isinstance(event, wsproto.events.TextMessage):
            raise ProtocolError("the box sent bytes where an event was due")
        return event.data

    async def send_text(self, data: str) -> None:
        await self.channel.send(TEXT, data.encode())

    async def send_bytes(self, data: bytes) -> None:
        await self.channel.send(BYTES, data)


class CoveredLink(Link):
    """A session link whose messages travel in cover frames, paced from the moment it opened."""

    def __init__(
        self,
        ws: AsyncWebSocketSession,
        stack: contextlib.AsyncExitStack,
        cover: Cover,
        clock: Clock | None = None,
    ) -> None:
        request = cover.request()
        self.cover, self.clock = cover, clock or MonotonicClock()
        self.messages = _Messages(
            ws,
            lambda messages: CoverChannel(
                ws.send_bytes,
                messages.receive_raw,
                period=request.period,
                frame_size=frame_size(request.burst),
                clock=self.clock,
            ),
        )
        super().__init__(ws, stack)
        self.ws = self.messages  # the same calls, through the cover

    @property
    def channel(self) -> CoverChannel:
        return self.messages.channel

    @classmethod
    async def open(
        cls, ws: AsyncWebSocketSession, stack: contextlib.AsyncExitStack, cover: Cover
    ) -> CoveredLink:
        """The link, its cover window begun: frames flow both ways from now on."""
        link = cls(ws, stack, cover)
        await stack.enter_async_context(link.channel)
        return link

    async def lead(self) -> None:
        """Wait until the cover has run ``lead`` seconds: then the invocation may go."""
        assert self.channel.started_at is not None
        await self.clock.sleep_until(self.channel.started_at + self.cover.lead)

    def report(self) -> dict[str, Any]:
        """What this link's cover did, for ``--json`` and the benchmarks."""
        stats = self.channel.stats
        started = self.channel.started_at
        return {
            "rate": self.cover.rate,
            "burst": self.cover.burst,
            "bytes_per_second": self.cover.bytes_per_second(),
            "seconds": round(self.clock.now() - started, 3) if started is not None else 0.0,
            # When the window began, on the wall clock (for lining it up with a capture).
            "started_wall": time.time() - (self.clock.now() - started) if started is not None else None,
            **{name: getattr(stats, name) for name in stats.__dataclass_fields__},
        }

    async def finish(self) -> None:
        """Keep covering until the window is over, then close."""
        try:
            if self.channel.started_at is not None:
                end = max(self.channel.started_at + self.cover.duration, self.clock.now() + self.cover.tail)
                await self.clock.sleep_until(end)
        finally:
            await self.close()
