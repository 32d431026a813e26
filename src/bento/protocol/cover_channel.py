"""One side of a covered stream: a pacer that sends a frame every period, and a reader.

Both sides run the same :class:`CoverChannel` over their WebSocket (the client's httpx-ws
session, the box's Starlette socket), given two callables: ``send_raw(frame)`` and
``receive_raw()`` (the next frame, ``None`` once the peer closed). The session's messages
go in with ``send(kind, data)`` and come out of ``receive()``; see
:mod:`bento.protocol.cover` for the frames.

- The pacer is driven by a :class:`Clock`: frame ``k`` is due at ``start + k * period``,
  so the rate does not drift with the time each send takes; a pacer that fell behind
  (a busy host) sends the missed frames at once, up to ``catch_up`` of them, and skips the
  rest (counted in ``stats.skipped``).
- Memory is bounded both ways: ``send`` waits while the outbox holds ``outbox`` bytes
  (backpressure to the session), and a sender never has more than ``WINDOW`` real bytes
  in flight beyond what the receiver says it consumed, so the receiver holds at most that
  much, while its junk keeps flowing at the rate.
- The two tasks belong to the channel: ``async with channel:`` starts them, and leaving
  cancels and awaits them. A failure of either (the link broke, the peer broke the
  protocol) reaches ``receive()`` after the records that came before it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from bento.protocol.cover import (
    BYTES,
    HEAD,
    RECORD,
    RECORD_PIECE,
    TEXT,
    WINDOW,
    CoverError,
    RecordReader,
    capacity,
    decode_frame,
    encode_frame,
    encode_record,
)


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic``, immune to changes of the wall clock."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))


@dataclass
class CoverStats:
    frames: int = 0  # frames sent
    real_bytes: int = 0  # record bytes they carried
    junk_bytes: int = 0  # the rest of them
    frames_in: int = 0  # frames received
    real_in: int = 0
    late: int = 0  # frames sent late, to catch up
    skipped: int = 0  # frames never sent: too late to catch up


class CoverChannel:
    def __init__(
        self,
        send_raw: Callable[[bytes], Awaitable[None]],
        receive_raw: Callable[[], Awaitable[bytes | None]],
        *,
        period: float,
        frame_size: int,
        clock: Clock | None = None,
        outbox: int = 256 << 10,
        window: int = WINDOW,
        catch_up: int | None = None,
    ) -> None:
        self._send_raw, self._receive_raw = send_raw, receive_raw
        self.period, self.frame_size = period, frame_size
        self.clock = clock or MonotonicClock()
        self.window = window
        self.catch_up = catch_up if catch_up is not None else max(1, round(0.5 / period))  # 0.5 s
        self.stats = CoverStats()
        self.started_at: float | None = None
        self._outbox = bytearray()
        self._outbox_limit = outbox
        self._drained = asyncio.Event()
        self._sent_real = 0  # real bytes we have put in frames
        self._peer_consumed = 0  # of those, what the peer says it took in
        self._consumed = 0  # real bytes we took in (told to the peer in every frame)
        self._reader = RecordReader(window)
        self._records: collections.deque[tuple[int, bytes, bool]] = collections.deque()  # counted?
        self._arrived = asyncio.Event()
        self._failure: BaseException | None = None
        self._closed = False  # the peer closed: no more frames
        self._tasks: list[asyncio.Task[None]] = []

    # --- the session's side ------------------------------------------------------------

    async def send(self, kind: int, data: bytes) -> None:
        """Queue one message for the frames; waits while the outbox is full."""
        pieces = (
            [data[i : i + RECORD_PIECE] for i in range(0, len(data), RECORD_PIECE)]
            if kind == BYTES
            else [data]
        )
        for piece in pieces or [b""]:
            record = encode_record(kind, piece)
            if len(record) > self.window:
                raise CoverError(f"a message of {len(piece)} bytes is over the cover window of {self.window}")
            while self._outbox and len(self._outbox) + len(record) > self._outbox_limit:
                self._raise_if_failed()
                self._drained.clear()
                await self._drained.wait()
            self._raise_if_failed()
            self._outbox += record

    async def receive(self) -> tuple[int, bytes] | None:
        """The next message (kind, data); None once the peer has closed. Raises what broke the link."""
        while not self._records:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        kind, data, counted = self._records.popleft()
        if counted:
            self._consumed += RECORD.size + len(data)  # the record's header and data, as the sender counts
        return kind, data

    def deliver_outside(self, data: bytes) -> None:
        """A text message that came outside the frames: the peer's refusal, before its cover began."""
        self._records.append((TEXT, data, False))
        self._arrived.set()

    async def flush(self) -> None:
        """Wait until every queued record has left in a frame (or the link failed)."""
        while self._outbox and self._failure is None:
            self._drained.clear()
            await self._drained.wait()

    @property
    def pending(self) -> int:
        """Real bytes waiting for frames."""
        return len(self._outbox)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    # --- the two tasks -----------------------------------------------------------------

    async def __aenter__(self) -> CoverChannel:
        self.started_at = self.clock.now()
        self._tasks = [
            asyncio.create_task(self._pace(self.started_at), name="cover-pacer"),
            asyncio.create_task(self._read(), name="cover-reader"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._arrived.set()
        self._drained.set()

    async def _pace(self, start: float) -> None:
        sent = 0  # frames due so far, sent or skipped
        try:
            while True:
                due = start + sent * self.period
                await self.clock.sleep_until(due)
                behind = int((self.clock.now() - due) / self.period)  # frames already overdue
                if behind > self.catch_up:
                    self.stats.skipped += behind - self.catch_up
                    sent += behind - self.catch_up
                    behind = self.catch_up
                self.stats.late += behind
                for _ in range(behind + 1):
                    await self._send_raw(self._frame())
                    sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the link broke under us: the reader will say so too
            self._fail(exc)

    def _frame(self) -> bytes:
        credit = self.window - (self._sent_real - self._peer_consumed)
        take = max(0, min(capacity(self.frame_size), credit, len(self._outbox)))
        real = bytes(self._outbox[:take])
        del self._outbox[:take]
        if take:
            self._drained.set()
        self._sent_real += take
        self.stats.frames += 1
        self.stats.real_bytes += take
        self.stats.junk_bytes += self.frame_size - HEAD.size - take
        return encode_frame(real, self._consumed, self.frame_size)

    async def _read(self) -> None:
        try:
            while (frame := await self._receive_raw()) is not None:
                self._take(frame)
            self._closed = True
            self._arrived.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    def _take(self, frame: bytes) -> None:
        if len(frame) != self.frame_size:
            raise CoverError(f"a cover frame of {len(frame)} bytes, not the {self.frame_size} agreed")
        length, consumed = decode_frame(frame)
        if not self._peer_consumed <= consumed <= self._sent_real:
            raise CoverError(f"the peer says it consumed {consumed} bytes of the {self._sent_real} sent")
        self._peer_consumed = consumed
        self.stats.frames_in += 1
        self.stats.real_in += length
        if length:
            received = self.stats.real_in
            if received - self._consumed > self.window:
                raise CoverError(f"the peer sent over the window of {self.window} bytes")
            records = self._reader.feed(frame[HEAD.size : HEAD.size + length])
            if records:
                self._records.extend((kind, data, True) for kind, data in records)
                self._arrived.set()
