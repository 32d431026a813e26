"""A session's logs: what its function printed, held apart from its output stream.

The runtime sends LOG frames (stdout, stderr, warnings, logging); the box keeps the
newest ``capacity`` bytes of them for as long as it keeps the session, so a client can
read them live, after a re-attach, or with ``bento logs`` once the session has ended.
Unlike output, logs never block the function: past the cap the oldest lines go, and
``dropped`` says how much. Every log byte counts against the function's output limit.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bento.protocol.messages import Log, LogStream


class LogBuffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.total = 0  # log bytes ever written (the offset after the newest)
        self.dropped = 0  # log bytes no longer held (the offset of the oldest held)
        self.closed = False
        self._entries: deque[Log] = deque()
        self._changed = asyncio.Condition()

    async def put(self, stream: LogStream, data: bytes) -> None:
        text = data.decode(errors="replace")  # offsets count the bytes of what clients get
        async with self._changed:
            self._entries.append(Log(stream=stream, offset=self.total, text=text))
            self.total += len(text.encode())
            while self.total - self.dropped > self.capacity and len(self._entries) > 1:
                oldest = self._entries.popleft()
                self.dropped = self._entries[0].offset
                del oldest
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self.closed = True
            self._changed.notify_all()

    def since(self, offset: int) -> list[Log]:
        """The entries held that end after ``offset``."""
        return [e for e in self._entries if e.offset + len(e.text.encode()) > offset]

    async def read(self, offset: int) -> list[Log] | None:
        """The entries after ``offset``, waiting for one; None once closed and all read."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.total > offset or self.closed)
            if self.total <= offset:
                return None
            return self.since(offset)
