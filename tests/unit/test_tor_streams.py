"""A function's stream that tor gives up fails at once, with tor's reason.

Tor answers a SOCKS request only once its stream connects. When the stream's circuit
closes, or the exit refuses or does not answer (tor then detaches the stream and, leaving
streams to its controller, holds it unattached until its SocksTimeout), tor says so on
the control port and not on the SOCKS connection. These tests play tor's part: a SOCKS
port that takes the request and never answers, as tor's does meanwhile, and the control
port's events; the broker's request must fail as soon as the event arrives, not after
its 60 s.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import stem
from stem.exit_policy import ExitPolicy

from bento.protocol.policy import Needs, NodePolicy, TorPolicy
from bento.server.broker import Context, Gatekeeper
from bento.server.broker.service import Broker
from bento.server.broker.tor import answers
from bento.server.broker.tor.instance import InstanceTor
from bento.server.broker.tor.service import TorForFunctions
from bento.tor.consensus import Directory, Relay

GUARD, MIDDLE, EXIT = (f"{n:040X}" for n in (1, 2, 3))
TARGET = ("127.0.0.1", 80)


class _Tor:
    """Tor's SOCKS port while a stream is being opened (it takes the request and answers
    nothing) and what the broker asks of its control port (a circuit, built at once;
    attach a stream, close one). ``changed`` is set whenever any of it happens."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.changed = loop, asyncio.Event()
        self.requests: asyncio.Queue[str] = asyncio.Queue()  # the SOCKS user of each request
        self.hung_up = 0  # SOCKS connections the broker closed
        self.connected = asyncio.Event()  # set: tor's "succeeded" reply to the request
        self.attached: list[tuple[str, str]] = []
        self.closed: list[str] = []
        # Set to hold the broker's attach call in its thread after tor has acted on it: the
        # control port's reply late behind the SOCKS port's.
        self.attach_replies: threading.Event | None = None

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait (at most 5 s) until ``done()`` holds."""
        async with asyncio.timeout(5):
            while True:
                self.changed.clear()
                if done():
                    return
                await self.changed.wait()

    async def serve_socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, methods = await reader.readexactly(2)
        await reader.readexactly(methods)
        writer.write(b"\x05\x02")  # user name and password: the instance's tag
        _, size = await reader.readexactly(2)
        user = (await reader.readexactly(size)).decode()
        await reader.readexactly((await reader.readexactly(1))[0])
        writer.write(b"\x01\x00")
        _, _, _, kind = await reader.readexactly(4)
        await reader.readexactly({1: 4, 4: 16}.get(kind) or (await reader.readexactly(1))[0])
        await reader.readexactly(2)
        await self.requests.put(user)
        reading = asyncio.create_task(reader.read())  # no reply until the broker hangs up...
        connected = asyncio.create_task(self.connected.wait())  # ... or tor's stream connects
        await asyncio.wait((reading, connected), return_when=asyncio.FIRST_COMPLETED)
        if connected.done():
            writer.write(b"\x05\x00\x00\x01" + bytes(6))
            await reading
        connected.cancel()
        self.hung_up += 1
        self.changed.set()
        writer.close()

    # What the broker asks of Stem, in its threads.
    def extend_circuit(self, circuit_id: str, path: list[str], purpose: str) -> str:
        return "1"

    def get_circuit(self, circuit_id: str, default: Any) -> Any:
        return types.SimpleNamespace(status=stem.CircStatus.BUILT)

    def close_circuit(self, circuit_id: str) -> None:
        pass

    def attach_stream(self, stream_id: str, circuit_id: str) -> None:
        self.loop.call_soon_threadsafe(self._record, self.attached, (stream_id, circuit_id))
        if self.attach_replies is not None:
            self.attach_replies.wait(10)

    def close_stream(self, stream_id: str) -> None:
        self.loop.call_soon_threadsafe(self._record, self.closed, stream_id)

    def _record(self, where: list[Any], what: Any) -> None:
        where.append(what)
        self.changed.set()


@pytest.fixture
async def tor(tmp_path: Path) -> AsyncIterator[tuple[InstanceTor, _Tor]]:
    fake = _Tor(asyncio.get_running_loop())
    server = await asyncio.start_server(fake.serve_socks, "127.0.0.1", 0)
    service = TorForFunctions(tmp_path)
    port = server.sockets[0].getsockname()[1]
    service.tor = types.SimpleNamespace(controller=fake, socks=("127.0.0.1", port))  # type: ignore[assignment]
    service.ready.set()
    relays = [Relay(GUARD, "g", ("Guard", "Running", "Valid"), 1, "10.0.0.1", 9001)]
    relays += [
        Relay(f, n, ("Running", "Valid"), 1, "10.0.0.2", 9001) for f, n in ((MIDDLE, "m"), (EXIT, "e"))
    ]
    service._directory = (time.monotonic(), Directory(relays, {EXIT: ExitPolicy("accept 127.0.0.1:80")}))
    policy = NodePolicy(network={"private_destinations": True}, tor=TorPolicy(circuits=True))
    gate = Gatekeeper(exit_allows=lambda _ip, _port: True, forbidden=set())
    instance = InstanceTor.open(service, "f", Needs(tor_circuits=1), policy, gate=gate)
    await service.build(instance.owner, [GUARD, MIDDLE, EXIT], instance.ledger.take("circuits"))
    yield instance, fake
    await instance.close()
    server.close()


def _context(tor: InstanceTor) -> Context:
    return Context(Needs(), NodePolicy(), tor.gate, _no_resolver, tor=tor, budgets=tor.ledger)


async def _no_resolver(host: str) -> list[str]:
    raise AssertionError("Tor requests resolve nothing on the box")


async def _stream_announced(tor: InstanceTor, fake: _Tor, stream_id: str) -> asyncio.Task[dict[str, Any]]:
    """A function's stream request, up to tor announcing its stream and the broker attaching it."""
    request = {"op": "tor.stream", "circuit": "1", "host": TARGET[0], "port": TARGET[1]}

    async def ask() -> dict[str, Any]:
        reply, sock = await Broker(_context(tor)).answer(json.dumps(request).encode())
        if sock is not None:
            sock.close()
        return {**json.loads(reply), "granted": sock is not None}

    asking = asyncio.create_task(ask())
    user = await asyncio.wait_for(fake.requests.get(), 5)
    assert user == tor.owner.tag
    tor.service.streams.on_event(stream_id, stem.StreamStatus.NEW, user, TARGET[0], "")
    await fake.until(lambda: (stream_id, "1") in fake.attached)
    assert not asking.done(), "tor has not answered the SOCKS request: the stream is still being opened"
    return asking


async def _failed_at_once(asking: asyncio.Task[dict[str, Any]]) -> str:
    reply = await asyncio.wait_for(asking, 2)  # the broker's own wait is 60 s
    assert reply["ok"] is False and reply["denied"] is False and not reply["granted"], reply
    return str(reply["error"])


async def test_a_stream_whose_circuit_closes_fails_at_once_with_its_reason(
    tor: tuple[InstanceTor, _Tor],
) -> None:
    instance, fake = tor
    asking = await _stream_announced(instance, fake, "41")
    instance.service._on_circ("1", stem.CircStatus.CLOSED, "DESTROYED", "OR_CONN_CLOSED")
    error = await _failed_at_once(asking)
    assert "the stream to 127.0.0.1:80 failed: its circuit 1 closed (DESTROYED; OR_CONN_CLOSED)" in error
    assert instance.ledger.usage()["streams"] == 0, "its unit of the streams budget came back"
    await fake.until(lambda: fake.hung_up == 1 and "41" in fake.closed)  # both let go
    # Its next stream is refused before tor is asked: the circuit is gone.
    reply, _ = await Broker(_context(instance)).answer(
        json.dumps({"op": "tor.stream", "circuit": "1", "host": TARGET[0], "port": TARGET[1]}).encode()
    )
    assert "circuit 1 is closed (DESTROYED; OR_CONN_CLOSED); build another" in json.loads(reply)["error"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("DETACHED", "TIMEOUT"),
        ("DETACHED", "EXITPOLICY"),
        ("FAILED", "DESTROY"),
        ("CLOSED", "CONNECTREFUSED"),
    ],
)
async def test_a_stream_tor_gives_up_fails_at_once_and_tor_lets_it_go(
    tor: tuple[InstanceTor, _Tor], status: str, reason: str
) -> None:
    """DETACHED: the exit refused or did not answer in tor's 10-15 s; tor would hold the
    stream for its controller until its SocksTimeout (2 minutes), telling the SOCKS client nothing."""
    instance, fake = tor
    asking = await _stream_announced(instance, fake, "42")
    instance.service.streams.on_event("42", status, instance.owner.tag, TARGET[0], reason)
    error = await _failed_at_once(asking)
    assert f"the stream to 127.0.0.1:80 failed: tor reported it {status} ({reason})" in error
    await fake.until(lambda: "42" in fake.closed)
    assert instance.ledger.usage()["streams"] == 0
    # The circuit is still the function's, and its next stream goes through it.
    second = await _stream_announced(instance, fake, "43")
    second.cancel()


async def test_a_stream_that_connected_is_not_failed_by_its_end(
    tor: tuple[InstanceTor, _Tor],
) -> None:
    """Tor said SUCCEEDED: a CLOSED that follows before the SOCKS reply is read is the function's to see."""
    instance, fake = tor
    asking = await _stream_announced(instance, fake, "44")
    instance.service.streams.on_event("44", stem.StreamStatus.SUCCEEDED, instance.owner.tag, TARGET[0], "")
    instance.service.streams.on_event("44", stem.StreamStatus.CLOSED, instance.owner.tag, TARGET[0], "DONE")
    fake.connected.set()
    reply = await asyncio.wait_for(asking, 5)
    assert reply["ok"] is True and reply["granted"], reply


async def test_a_stream_connected_before_the_attach_call_returns_is_granted_and_counted(
    tor: tuple[InstanceTor, _Tor],
) -> None:
    """Tor's SOCKS reply overtook its reply to the attach (seen in CI): the function gets its
    stream, and the unit of its streams budget comes back when tor closes it, not before."""
    instance, fake = tor
    fake.attach_replies = threading.Event()
    try:
        asking = await _stream_announced(instance, fake, "45")
        fake.connected.set()
        reply = await asyncio.wait_for(asking, 5)
        assert reply["ok"] is True and reply["granted"], reply
        assert instance.ledger.usage()["streams"] == 1  # open at tor: still the function's
    finally:
        fake.attach_replies.set()
    instance.service.streams.on_event("45", stem.StreamStatus.CLOSED, instance.owner.tag, TARGET[0], "DONE")
    assert instance.ledger.usage()["streams"] == 0


async def test_the_functions_timeout_bounds_the_connect(tor: tuple[InstanceTor, _Tor]) -> None:
    """``circuit.connect(host, port, timeout=0.3)``: the broker waits 0.3 s for tor, not its 60."""
    instance, fake = tor
    request = {"op": "tor.stream", "circuit": "1", "host": TARGET[0], "port": TARGET[1], "timeout": 0.3}
    reply, sock = await asyncio.wait_for(Broker(_context(instance)).answer(json.dumps(request).encode()), 5)
    assert sock is None and "the stream to 127.0.0.1:80 failed" in json.loads(reply)["error"]
    assert "timed out" in json.loads(reply)["error"]
    await fake.until(lambda: fake.hung_up == 1)
    assert instance.ledger.usage()["streams"] == 0


async def test_a_tor_that_does_not_answer_the_attach_fails_the_stream_with_a_clear_error(
    tor: tuple[InstanceTor, _Tor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stem's calls have no timeout: a silent tor held the function's request until its
    connect timed out (60 s). The thread stays the function's until tor answers."""
    monkeypatch.setattr(answers, "CONTROL_TIMEOUT", 1.0)
    instance, fake = tor
    fake.attach_replies = threading.Event()
    try:
        asking = await _stream_announced(instance, fake, "46")
        error = await _failed_at_once(asking)
        assert "the box's Tor for functions did not answer ATTACHSTREAM 46 within 1 s" in error
        assert instance.ledger.usage()["streams"] == 0
        assert instance.ledger.usage()["threads"] == 1, "the blocked call still holds its thread"
        await fake.until(lambda: "46" in fake.closed)  # and the stream is let go
    finally:
        fake.attach_replies.set()
    async with asyncio.timeout(5):  # the thread's unit comes back once tor answers
        while instance.ledger.usage()["threads"]:
            instance.ledger._freed.clear()  # set on the loop whenever a unit comes back
            await instance.ledger._freed.wait()
