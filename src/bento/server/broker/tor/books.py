"""The books of Tor for functions: what each function holds in the functions' tor.

Plain records, kept by :class:`bento.server.broker.tor.service.TorForFunctions` (which
acts on tor) and read by :mod:`bento.server.broker.tor.instance` (which answers instances).
Each record that stands for something a function holds carries the budget unit it was
granted under (:class:`bento.server.broker.budgets.Hold`), given back when it goes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bento.server.broker.budgets import Exhausted, Hold, Ledger

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
    hold: Hold | None = None  # the function's "circuits" unit, given back when it is closed

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
    ledger: Ledger  # its function's budgets: its Stem calls run in the function's threads
    circuits: set[str] = field(default_factory=set)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    news: asyncio.Event = field(default_factory=asyncio.Event)
    streams: set[str] = field(default_factory=set)

    def tell(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.news.set()


@dataclass
class PendingStream:
    """A stream an instance asked for, until tor announces it and it is attached."""

    circuit: str  # "0": tor picks (onion addresses)
    host: str
    attached: asyncio.Future[str]  # its stream id, once attached
    hold: Hold  # the function's streams unit: tor's CLOSED event for the stream gives it back
    given_up: asyncio.Future[str]  # tor's reason, once tor gave it up before it connected
    stream: str = ""  # the id tor announced it with (attaching it takes a control-port call)
    connected: bool = False  # tor said it succeeded: what comes after is the function's to read
    closed: bool = False  # tor said it closed (then nothing more will tell of its end)

    @property
    def over_a_circuit(self) -> bool:
        """A stream over one of the instance's circuits that tor has not announced yet."""
        return self.circuit != "0" and not self.stream

    def give_up(self, reason: str) -> None:
        """Tor gave it up (its circuit closed, the exit refused or did not answer): its request fails now."""
        if not self.connected and not self.given_up.done():
            self.given_up.set_result(reason)

    def wants(self, target: str) -> bool:
        """Whether tor's new stream to ``target`` (as its STREAM event names it) is this one."""
        return target.strip("[]").lower() == self.host.strip("[]").lower()


@dataclass
class Kept:
    """Something the server holds for a function, with the budget unit it was granted under."""

    hold: Hold
    port: int
    sock: socket.socket | None = None  # a listener's server-side copy

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.hold.release()


@dataclass
class FunctionOnions:
    """A function's onion services and the listening sockets they may lead to.

    The server keeps a copy of a function's recent listeners (at most its ``listeners``
    budget: the oldest one no service leads to makes way for a new one), so that the port
    of a published service cannot pass to anyone else while the service lives."""

    services: dict[str, Kept] = field(default_factory=dict)  # service id -> its port
    listeners: dict[int, Kept] = field(default_factory=dict)  # port -> the server's copy, oldest first
    instances: int = 0

    def published(self, port: int) -> bool:
        return any(kept.port == port for kept in self.services.values())

    def keep(self, sock: socket.socket, ledger: Ledger) -> None:
        """Keep a copy of a new listener: the oldest copy no service leads to makes way
        once the budget is spent (Exhausted if every copy is in use)."""
        try:
            hold = ledger.take("listeners")
        except Exhausted:
            idle = [port for port in self.listeners if not self.published(port)]
            if not idle:
                raise
            self.listeners.pop(idle[0]).release()
            hold = ledger.take("listeners")
        port = int(sock.getsockname()[1])
        self.listeners[port] = Kept(hold, port, sock.dup())
