"""The books of Tor for functions: what each function holds in the functions' tor.

Plain records, kept by :class:`bento.server.tor_for_functions.TorForFunctions` (which
acts on tor) and read by :mod:`bento.server.function_tor` (which answers instances).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

EVENTS_KEPT = 256


class TorDenied(PermissionError):
    """Not allowed by the manifest or the policy, or not this instance's to touch."""


@dataclass
class Circuit:
    """One function circuit, as the server tracks it from tor's CIRC events."""

    id: str
    owner: str  # the instance's tag
    path: list[str]
    state: str = "building"  # building, built, failed, closed
    reason: str = ""
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    built_seconds: float | None = None
    launched: float = field(default_factory=time.monotonic)

    def as_json(self) -> dict[str, Any]:
        return {
            "circuit": self.id,
            "state": self.state,
            "reason": self.reason,
            "path": self.path,
            "built_seconds": self.built_seconds,
        }


@dataclass
class Owner:
    """What one instance has made, and the events it has not read yet."""

    tag: str
    function_id: str
    circuits: set[str] = field(default_factory=set)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    news: asyncio.Event = field(default_factory=asyncio.Event)
    streams: set[str] = field(default_factory=set)

    def tell(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.news.set()


@dataclass
class FunctionOnions:
    """A function's onion services and the listening sockets they lead to."""

    services: dict[str, int] = field(default_factory=dict)  # service id -> local port
    listeners: dict[int, socket.socket] = field(default_factory=dict)
    instances: int = 0
