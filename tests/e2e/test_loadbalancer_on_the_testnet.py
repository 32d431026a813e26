"""LoadBalancer on the testnet: one onion address, replicas on both boxes, scaling up under
load and down after it, a replica whose box dies replaced, a service that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from python_socks.async_.asyncio import Proxy
from support import TIMEOUT

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.client.stream import SessionStream
from bento.functions.loadbalancer import client as lb
from bento.functions.loadbalancer.policy import Settings
from bento.testnet import Testnet

pytestmark = pytest.mark.timeout(900)

SERVICE = """
import os

REPLICA = os.urandom(4).hex()  # once per replica: who served a request

def handle(conn):
    data = b""
    while not data.endswith(b"\\n"):
        chunk = conn.recv(1024)
        if not chunk:
            return
        data += chunk
    word = data.strip().decode()
    if word == "silent":  # never answers: the LoadBalancer must not hold the client forever
        conn.recv(1024)
        return
    if word == "hold":  # answers, then echoes each line the client keeps it alive with, until "done"
        conn.sendall(f"{REPLICA} holding\\n".encode())
        held = b""
        while True:
            chunk = conn.recv(1024)
            if not chunk:
                return
            held += chunk
            while b"\\n" in held:
                line, held = held.split(b"\\n", 1)
                if line == b"done":
                    conn.sendall(f"{REPLICA} {word}\\n".encode())
                    return
                conn.sendall(line + b"\\n")
    conn.sendall(f"{REPLICA} {word}\\n".encode())
"""

IDLE = 8.0


class Events:
    """The LoadBalancer's events, read in the background; ``wait`` for the one a test needs."""

    def __init__(self, stream: SessionStream) -> None:
        self.seen: list[dict[str, Any]] = []
        self._new = asyncio.Condition()
        self._stream = stream

    async def follow(self) -> None:
        async for event in lb.events(self._stream):
            async with self._new:
                self.seen.append(event)
                self._new.notify_all()

    async def wait(self, after: int, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.seen[after:] if all(e.get(k) == v for k, v in match.items())), None)

        try:
            async with asyncio.timeout(TIMEOUT), self._new:
                await self._new.wait_for(lambda: found() is not None)
        except TimeoutError:
            raise AssertionError(f"no {match} in {TIMEOUT} s; the LoadBalancer said {self.seen}") from None
        event = found()
        assert event is not None
        return event


async def _connect(testnet: Testnet, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    proxy = Proxy.from_url(f"socks5://{testnet.socks_address}", rdns=True)
    sock = await proxy.connect(address, 80, timeout=120)
    return await asyncio.open_connection(sock=sock)


async def _ask(testnet: Testnet, address: str, word: str) -> str:
    """One request through the LoadBalancer; the id of the replica that served it."""
    reader, writer = await _connect(testnet, address)
    try:
        writer.write(f"{word}\n".encode())
        async with asyncio.timeout(TIMEOUT):
            line = (await reader.readline()).decode().split()
    finally:
        writer.close()
    assert line[1:] == [word], line
    return line[0]


async def _keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A line every IDLE/3 s, echoed by the service: a held connection is load, not idle.

    Idle for IDLE s, the LoadBalancer lets a connection go, and its load with it: a second
    replica slow to start (seen on a 2-core CI machine) was then drained before it was up.
    """
    while True:
        writer.write(b"alive\n")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readline() == b"alive\n", "a held connection was let go"
        await asyncio.sleep(IDLE / 3)  # the pace of the traffic itself, not a synchronisation


@contextlib.asynccontextmanager
async def _held(testnet: Testnet, address: str, count: int) -> AsyncIterator[list[str]]:
    """``count`` live connections through the LoadBalancer, kept busy until the block ends."""
    links = [await _connect(testnet, address) for _ in range(count)]
    served = []
    keeping: list[asyncio.Task[None]] = []
    try:
        for reader, writer in links:
            writer.write(b"hold\n")
            async with asyncio.timeout(TIMEOUT):
                served.append((await reader.readline()).decode().split()[0])
            keeping.append(asyncio.create_task(_keep_alive(reader, writer)))
        yield served
        for task in keeping:  # one that failed says why (the connection was let go)
            if task.done():
                task.result()
    finally:
        for task in keeping:
            task.cancel()
        await asyncio.gather(*keeping, return_exceptions=True)
        for reader, writer in links:
            writer.write(b"done\n")
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(60):
                    while (line := await reader.readline()) and not line.endswith(b" hold\n"):
                        pass  # an echo of the last keep-alive, cancelled before it was read
            writer.close()


async def test_loadbalancer_replicates_scales_and_replaces_a_lost_replica(
    testnet: Testnet, box: Box, tmp_path: Path
) -> None:
    exit0, exit1 = testnet.state.boxes[:2]  # the last box may be run by its own user
    assert exit0.bento_onion and exit1.bento_onion and exit1.bento_pid
    service = tmp_path / "echo_service.py"
    service.write_text(SERVICE)
    settings = Settings(minimum=1, maximum=2, high=1.5, low=0.5, up_after=1, down_after=5, start_timeout=240)
    async with asyncio.timeout(TIMEOUT):
        function, stream, address = await lb.start(
            box, Keyring(tmp_path / "keyring.json"), service, settings,
            [exit1.bento_onion, exit0.bento_onion], concurrency=8, idle_seconds=IDLE,
        )  # fmt: skip
    events = Events(stream)
    follower = asyncio.create_task(events.follow())
    restarted = False
    try:
        assert address.endswith(".onion") and len(address) == 62
        first = await events.wait(0, event="up")
        assert first["box"] == exit1.bento_onion, events.seen  # preferred first
        one = await _ask(testnet, address, "ping")

        # Load: three live connections on one replica (above 1.5 each) start a second one,
        # on the other box, and new connections go to it (it holds the fewest).
        mark = len(events.seen)
        async with _held(testnet, address, 3) as holders:
            assert holders == [one] * 3, (events.seen, stream.logs)
            second = await events.wait(mark, event="up")
            assert second["box"] == exit0.bento_onion
            two = await _ask(testnet, address, "pong")
            assert two != one
        assert (await events.wait(mark, event="scale"))["desired"] == 2

        # After the load: below 0.5 for 5 s, one is drained and stopped (the newest, idle).
        stopped = await events.wait(mark, event="stopped")
        assert stopped["replica"] == second["replica"] and stopped["why"].startswith("drained")
        assert await _ask(testnet, address, "again") == one

        # A service that never answers: the client is let go after the idle timeout.
        reader, writer = await _connect(testnet, address)
        writer.write(b"silent\n")
        async with asyncio.timeout(IDLE * 6):
            assert await reader.read() == b""
        writer.close()

        # exit1's box dies: its replica is lost, replaced on exit0, and the address serves on.
        mark = len(events.seen)
        os.kill(exit1.bento_pid, signal.SIGKILL)
        lost = await events.wait(mark, event="lost")
        assert lost["replica"] == first["replica"]
        replacement = await events.wait(mark, event="up")
        assert replacement["box"] == exit0.bento_onion
        assert await _ask(testnet, address, "after") not in (one, two)
        await asyncio.to_thread(testnet.restart_box, exit1.nickname)
        restarted = True
    finally:
        follower.cancel()
        with contextlib.suppress(BaseException):
            await follower
        await stream.close()
        await box.shutdown(function)
        if not restarted:
            await asyncio.to_thread(testnet.restart_box, exit1.nickname)
