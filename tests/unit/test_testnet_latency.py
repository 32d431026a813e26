"""The delaying link that emulates wide-area latency on the testnet (no tor needed)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bento.testnet.config import TestnetConfig, render_torrc
from bento.testnet.latency import Link, serve_link
from bento.testnet.plan import plan
from bento.testnet.state import Node, Role


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_a_link_delays_each_way_and_carries_every_byte_in_order() -> None:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = echo.sockets[0].getsockname()[1]
    link_server = await serve_link(Link(("127.0.0.1", 0), ("127.0.0.1", port), 0.1))
    link_port = link_server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", link_port)
        started = time.monotonic()
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
        # Once there, once back: at least two one-way delays (load can only add to it).
        assert time.monotonic() - started >= 0.2
        payload = os.urandom(3 << 20)
        writer.write(payload)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 30) == payload
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the close is carried too
        writer.close()
    finally:
        link_server.close()
        echo.close()


def test_a_relay_behind_a_link_advertises_the_link_and_listens_elsewhere() -> None:
    relay = Node(Role.RELAY, "relay0", "/d/relay0", 6, or_port=7, or_listen_port=8, fingerprint="D" * 40)
    torrc = render_torrc(relay, [relay], None)
    assert "ORPort 127.0.0.1:7 NoListen\nORPort 127.0.0.1:8 NoAdvertise\n" in torrc
    plain = Node(Role.RELAY, "relay1", "/d/relay1", 6, or_port=7, fingerprint="E" * 40)
    assert "ORPort 127.0.0.1:7\n" in render_torrc(plain, [plain], None)


def test_every_port_of_a_delayed_testnet_is_its_own(tmp_path: Path) -> None:
    # The delayed links' ports were once picked after the nodes' were freed, and a relay
    # got one port for both its control port and its OR listener: tor could not start.
    nodes = plan(tmp_path, TestnetConfig(directory=tmp_path, hop_delay_ms=25))
    ports = [
        port
        for n in nodes
        for port in (n.control_port, n.or_port, n.or_listen_port, n.dir_port, n.socks_port)
        if port is not None
    ]
    assert all(n.or_listen_port is not None for n in nodes if n.is_relay)
    assert len(ports) == len(set(ports)) == len(nodes) * 2 + sum(n.is_relay for n in nodes) + 3
