"""A session's output, held until a client acknowledges it.

Bytes have absolute offsets in the session's output stream. The buffer holds
``[acked, end)``: everything a client has not yet confirmed. A client that detaches
and re-attaches resumes at ``acked``, so nothing is lost and nothing acknowledged is
sent twice. When the buffer holds ``capacity`` bytes, ``put`` waits: the function's
writes block, which is the backpressure that keeps memory bounded.

Once the session has ended, what it still holds counts against the box's total for
retained output (bento.server.registry); the oldest is dropped first (:meth:`expire`),
and a client that comes back for it learns that it is gone.

Only ``put`` and ``read`` wait; everything else is synchronous, so that a session can
always be concluded, even from a clean-up path that must not be interrupted.
"""

from __future__ import annotations

import asyncio
from collections import deque

READ_CHUNK = 256 << 10


class Expired(Exception):
    """The output was dropped to keep the box's memory bounded."""


class OutputBuffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.acked = 0
        self.end = 0
        self.closed = False
        self.expired = False
        self.blocked = False  # a put waits for a client to acknowledge: the function is held back
        self._chunks: deque[bytes] = deque()  # covers [acked, end) exactly
        self._skip = 0  # bytes of _chunks[0] already acknowledged
        self._changed = asyncio.Event()  # replaced on every change; waiters hold the old one

    @property
    def held(self) -> int:
        return self.end - self.acked

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def put(self, data: bytes) -> None:
        # An empty buffer always takes the chunk, so a chunk larger than the capacity
        # cannot wedge the stream.
        while self.held and self.held + len(data) > self.capacity:
            self.blocked = True
            try:
                await self._changed.wait()
            finally:
                self.blocked = False
        self._chunks.append(data)
        self.end += len(data)
        self._notify()

    def close(self) -> None:
        """No more output will come."""
        self.closed = True
        self._notify()

    def expire(self) -> int:
        """Drop everything held (the session has ended and nobody came for it); the bytes freed."""
        freed = self.held
        self._chunks.clear()
        self._skip = 0
        self.acked = self.end
        self.closed = self.expired = True
        self._notify()
        return freed

    def ack(self, offset: int) -> None:
        """Everything before ``offset`` has been received; offsets out of range are clamped."""
        offset = max(self.acked, min(offset, self.end))
        drop = offset - self.acked
        while drop:
            first = len(self._chunks[0]) - self._skip
            if drop >= first:
                self._chunks.popleft()
                self._skip = 0
                drop -= first
            else:
                self._skip += drop
                drop = 0
        self.acked = offset
        self._notify()

    async def read(self, offset: int) -> bytes | None:
        """Up to READ_CHUNK bytes from ``offset`` on; waits for them. None once all is read and closed.

        Raises :class:`Expired` if the bytes were dropped before they were acknowledged.
        """
        while self.end <= offset and not self.closed:
            await self._changed.wait()
        if self.expired and offset < self.end:
            raise Expired(f"output from byte {offset} on was dropped to keep the box's memory bounded")
        if self.end <= offset:
            return None
        return self._slice(max(offset, self.acked))

    def _slice(self, offset: int) -> bytes:
        position = self.acked - self._skip  # the offset at which _chunks[0] starts
        out: list[bytes] = []
        size = 0
        for chunk in self._chunks:
            start = max(0, offset - position)
            position += len(chunk)
            if start >= len(chunk):
                continue
            piece = chunk[start : start + READ_CHUNK - size]
            out.append(piece)
            size += len(piece)
            if size >= READ_CHUNK:
                break
        return b"".join(out)
