"""The client's SOCKS transport with optimistic data, against a SOCKS5 server on loopback that
answers a CONNECT only once the request behind it has arrived (as tor may: it sends the
request behind BEGIN, before the stream is connected)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from bento.client import tor_socks

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
CONNECTED = b"\x05\x00\x00\x01" + bytes(4) + bytes(2)
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Proxy:
    """What the server answers to the method offer and the log-in, and what it saw."""

    method: bytes = b"\x05\x00"
    login: bytes = b"\x01\x00"
    seen: dict[str, bytes] = field(default_factory=dict)


@asynccontextmanager
async def serve(proxy: Proxy, answer: Answer) -> AsyncIterator[str]:
    """A SOCKS5 server: the method and log-in answered at once, the CONNECT only after the
    request that follows it (a client that waits for that answer first never gets one)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        offer = await reader.readexactly(2)
        proxy.seen["offer"] = offer + await reader.readexactly(offer[1])
        writer.write(proxy.method)
        if proxy.method == b"\x05\x02":
            head = await reader.readexactly(2)
            user = await reader.readexactly(head[1])
            size = await reader.readexactly(1)
            proxy.seen["login"] = head + user + size + await reader.readexactly(size[0])
            writer.write(proxy.login)
        if proxy.method in (b"\x05\x00", b"\x05\x02") and proxy.login == b"\x01\x00":
            head = await reader.readexactly(5)  # version, command, reserved, type, name length
            name = await reader.readexactly(head[4])
            proxy.seen["connect"] = head + name + await reader.readexactly(2)
            proxy.seen["request"] = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            await answer(writer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def get(socks: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=tor_socks.transport(socks), timeout=10) as http:
        return await http.get("http://abcdef.onion/v1/descriptor")


async def send(data: bytes) -> Answer:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(data)

    return answer


async def test_the_request_leaves_with_the_connect_and_the_name_goes_to_the_proxy() -> None:
    proxy = Proxy()
    async with serve(proxy, await send(CONNECTED + RESPONSE)) as socks:  # answer and response at once
        response = await get(socks)
    assert response.status_code == 200 and response.text == "hello"
    assert proxy.seen["offer"] == b"\x05\x01\x00"  # SOCKS5, one method: no authentication
    assert proxy.seen["connect"] == b"\x05\x01\x00\x03\x0cabcdef.onion\x00\x50"  # a name, port 80
    assert proxy.seen["request"].startswith(b"GET /v1/descriptor HTTP/1.1\r\n")


async def test_a_user_name_and_password_log_in_first_so_that_tor_isolates_the_stream() -> None:
    proxy = Proxy(method=b"\x05\x02")
    async with serve(proxy, await send(CONNECTED + RESPONSE)) as socks:
        response = await get(f"circuit-7:x@{socks}")
    assert response.text == "hello"
    assert proxy.seen["offer"] == b"\x05\x01\x02"
    assert proxy.seen["login"] == b"\x01\x09circuit-7\x01x"


async def test_an_answer_that_arrives_a_byte_at_a_time_and_with_a_name_is_taken_whole() -> None:
    named = b"\x05\x00\x00\x03\x04tor!\x00\x00"

    async def answer(writer: asyncio.StreamWriter) -> None:
        for byte in named + RESPONSE:
            writer.write(bytes([byte]))
            await writer.drain()

    async with serve(Proxy(), answer) as socks:
        response = await get(socks)
    assert response.text == "hello"


@pytest.mark.parametrize(
    ("proxy", "answer", "message"),
    [
        (Proxy(), b"\x05\x04\x00\x01" + bytes(6), "Proxy Server could not connect: Host unreachable."),
        (Proxy(), b"\x05\x01\x00\x01" + bytes(6), "Proxy Server could not connect: General server failure."),
        (Proxy(), b"\x04\x00\x00\x01" + bytes(6), "malformed"),
        (Proxy(), b"\x05\x00\x00", "closed the connection before it answered"),
        (Proxy(method=b"\x05\xff"), b"", "refused the method NO_AUTH_REQUIRED"),
        (Proxy(method=b"\x05\x02", login=b"\x01\x01"), b"", "refused the user name and password"),
    ],
)
async def test_a_refusal_or_garbage_is_a_proxy_error_that_says_which(
    proxy: Proxy, answer: bytes, message: str
) -> None:
    async with serve(proxy, await send(answer)) as socks:
        with pytest.raises(httpx.ProxyError, match=message):
            await get(f"u:p@{socks}" if proxy.method == b"\x05\x02" else socks)
