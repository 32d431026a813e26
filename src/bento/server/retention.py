"""What a box keeps of ended sessions, for a client that comes back late, within bounds.

A client may start sessions and never come back for them. So what ended sessions hold is
bounded three ways, each from the server config: for how long a session is kept
(``session_retention_seconds``), how many are kept (``retained_sessions``), and how many
bytes of unacknowledged output they hold together (``retained_output_bytes``). The oldest
goes first. A client that asks for what was dropped gets 410 Gone, not a silent gap.

Running sessions are bounded already: each holds at most ``session_buffer_bytes``
(its function waits beyond that), and the node policy bounds how many run.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from bento.server.session import Session

GONE_MEMORY = 4  # remember this many times ``retained_sessions`` forgotten ids, for a clear 410


class Retention:
    def __init__(self, seconds: float, max_sessions: int, max_output_bytes: int) -> None:
        self.seconds = seconds
        self.max_sessions = max_sessions
        self.max_output_bytes = max_output_bytes
        self._ended: OrderedDict[str, Session] = OrderedDict()  # in the order they ended
        self._gone: OrderedDict[str, None] = OrderedDict()  # ids forgotten, the newest last

    @property
    def output_bytes(self) -> int:
        """Unacknowledged output and logs that ended sessions hold, together."""
        return sum(s.output.held + s.logs.held for s in self._ended.values())

    def ended(self, session: Session) -> list[Session]:
        """Keep ``session``; drop the oldest output over the byte cap. Returns sessions to forget."""
        self._ended[session.id] = session
        excess = self.output_bytes - self.max_output_bytes
        for older in self._ended.values():
            if excess <= 0:
                break
            if older.attachment is None and (older.output.held or older.logs.held):  # else being read
                excess -= older.output.expire() + older.logs.expire()
        over = len(self._ended) - self.max_sessions
        return list(self._ended.values())[: max(over, 0)]

    def due(self, now: float | None = None) -> list[Session]:
        """Ended sessions past their retention time that no client is attached to."""
        horizon = (time.time() if now is None else now) - self.seconds
        return [
            s
            for s in self._ended.values()
            if s.ended_at is not None and s.ended_at < horizon and s.attachment is None
        ]

    def drop(self, session: Session) -> None:
        """Stop keeping ``session`` (its function was shut down: it is not "gone", it never was)."""
        self._ended.pop(session.id, None)

    def forget(self, session: Session) -> None:
        """Stop keeping ``session``, and remember that it existed (410, not 404, if asked for)."""
        self._ended.pop(session.id, None)
        if session.ended:
            self._gone[session.id] = None
            while len(self._gone) > GONE_MEMORY * self.max_sessions:
                self._gone.popitem(last=False)

    def gone(self, session_id: str) -> bool:
        """Whether ``session_id`` is a session this box ended and has since forgotten."""
        return session_id in self._gone
