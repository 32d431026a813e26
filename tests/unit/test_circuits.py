"""Each right's requests go through the SOCKS port under a user name of their own, so that tor
puts them on a circuit of their own; requests under no right keep the caller's log-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from bento.client import circuits, tor_socks

CONNECTED = b"\x05\x00\x00\x01" + bytes(4) + bytes(2)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HELD = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhe"  # the rest never comes: a response still read


@asynccontextmanager
async def proxy(log_ins: list[str | None]) -> AsyncIterator[str]:
    """A SOCKS5 server that notes each connection's user name (None: no log-in) and answers
    every request on it; a request for /held gets half a body, and the connection stays."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        offer = await reader.readexactly(2)
        methods = await reader.readexactly(offer[1])
        if 2 in methods:  # user name and password
            writer.write(b"\x05\x02")
            head = await reader.readexactly(2)
            user = (await reader.readexactly(head[1])).decode()
            await reader.readexactly((await reader.readexactly(1))[0])
            writer.write(b"\x01\x00")
            log_ins.append(user)
        else:
            writer.write(b"\x05\x00")
            log_ins.append(None)
        head = await reader.readexactly(5)
        await reader.readexactly(head[4] + 2)
        writer.write(CONNECTED)
        try:
            while request := await reader.readuntil(b"\r\n\r\n"):
                writer.write(HELD if request.startswith(b"GET /held ") else OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_requests_under_two_rights_never_share_a_connection_nor_a_log_in() -> None:
    log_ins: list[str | None] = []
    async with proxy(log_ins) as socks, httpx.AsyncClient(transport=tor_socks.transport(socks)) as http:
        for right in ("token-a", "token-a", "token-b", None):
            response = await http.get("http://box.onion/", extensions=circuits.extensions(right))
            assert response.text == "ok"
    # token-a's second request reused its connection; each right had a connection of its own.
    assert log_ins == [circuits.circuit_name("token-a"), circuits.circuit_name("token-b"), None]
    assert "token-a" not in str(log_ins)  # the user name tor sees is not the token


async def test_a_callers_own_log_in_stays_and_prefixes_each_rights_user_name() -> None:
    log_ins: list[str | None] = []
    async with (
        proxy(log_ins) as socks,
        httpx.AsyncClient(transport=tor_socks.transport(f"me:pw@{socks}")) as http,
    ):
        await http.get("http://box.onion/")
        await http.get("http://box.onion/", extensions=circuits.extensions("token-a"))
    assert log_ins == ["me", f"me.{circuits.circuit_name('token-a')}"]


async def test_idle_circuits_beyond_the_limit_close_and_one_still_reading_stays() -> None:
    log_ins: list[str | None] = []
    async with proxy(log_ins) as socks:
        transport = tor_socks.transport(socks)
        async with httpx.AsyncClient(transport=transport) as http:
            reading = await http.send(
                http.build_request("GET", "http://box.onion/held", extensions=circuits.extensions("held")),
                stream=True,
            )
            for n in range(circuits.MOST_IDLE_CIRCUITS + 5):
                await http.get("http://box.onion/", extensions=circuits.extensions(f"token-{n}"))
            kept = transport._circuits
            assert len(kept) == circuits.MOST_IDLE_CIRCUITS
            assert circuits.circuit_name("held") in kept  # the oldest, but its response is still read
            assert circuits.circuit_name("token-0") not in kept
            await reading.aclose()
