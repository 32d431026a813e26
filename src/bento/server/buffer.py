"""A session's output, held until a client acknowledges it.

Bytes have absolute offsets in the session's output stream. The buffer holds
``[acked, end)``: everything a client has not yet confirmed. A client that detaches
and re-attaches resumes at ``acked``, so nothing is lost and nothing acknowledged is
sent twice. When the buffer holds ``capacity`` bytes, ``put`` waits: the function's
writes block, which is the backpressure that keeps memory bounded.
"""

from __future__ import annotations

import asyncio
from collections import deque

READ_CHUNK = 256 << 10


class OutputBuffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.acked = 0
        self.end = 0
        self.closed = False
        self._chunks: deque[bytes] = deque()  # covers [acked, end) exactly
        self._skip = 0  # bytes of _chunks[0] already acknowledged
        self._changed = asyncio.Condition()

    @property
    def held(self) -> int:
        return self.end - self.acked

    async def put(self, data: bytes) -> None:
        async with self._changed:
            # An empty buffer always takes the chunk, so a chunk larger than the
            # capacity cannot wedge the stream.
            await self._changed.wait_for(lambda: self.held == 0 or self.held + len(data) <= self.capacity)
            self._chunks.append(data)
            self.end += len(data)
            self._changed.notify_all()

    async def close(self) -> None:
        """No more output will come."""
        async with self._changed:
            self.closed = True
            self._changed.notify_all()

    async def ack(self, offset: int) -> None:
        """Everything before ``offset`` has been received; offsets out of range are clamped."""
        async with self._changed:
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
            self._changed.notify_all()

    async def read(self, offset: int) -> bytes | None:
        """Up to READ_CHUNK bytes from ``offset`` on; waits for them. None once all is read and closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.end > offset or self.closed)
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
