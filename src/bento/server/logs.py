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
        self._changed = asyncio.Event()  # replaced on every change; waiters hold the old one

    @property
    def held(self) -> int:
        return self.total - self.dropped

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def put(self, stream: LogStream, data: bytes) -> None:
        text = data.decode(errors="replace")  # offsets count the bytes of what clients get
        self._entries.append(Log(stream=stream, offset=self.total, text=text))
        self.total += len(text.encode())
        while self.total - self.dropped > self.capacity and len(self._entries) > 1:
            self._entries.popleft()
            self.dropped = self._entries[0].offset
        self._notify()

    def close(self) -> None:
        """No more logs will come (synchronous, so that a session can always be concluded)."""
        self.closed = True
        self._notify()

    def expire(self) -> int:
        """Drop every entry (the session ended long ago; bento.server.retention); the bytes freed."""
        freed = self.held
        self._entries.clear()
        self.dropped = self.total
        self.closed = True
        self._notify()
        return freed

    def since(self, offset: int) -> list[Log]:
        """The entries held that end after ``offset``."""
        return [e for e in self._entries if e.offset + len(e.text.encode()) > offset]

    async def read(self, offset: int) -> list[Log] | None:
        """The entries after ``offset``, waiting for one; None once closed and all read."""
        while self.total <= offset and not self.closed:
            await self._changed.wait()
        if self.total <= offset:
            return None
        return self.since(offset)
