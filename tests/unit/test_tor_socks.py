"""The client's SOCKS transport with optimistic data, against a SOCKS5 server on loopback that
answers only once the request has arrived (as tor may: it sends the request behind BEGIN)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from bento.client import tor_socks

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
SUCCEEDED = b"\x05\x00" + b"\x05\x00\x00\x01" + bytes(4) + bytes(2)
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def proxy(answer: Answer, seen: dict[str, bytes]) -> AsyncIterator[str]:
    """A SOCKS5 server that reads the offer, the CONNECT request and the start of the HTTP
    request before it answers at all (a client that waits for the answer first never
    gets one), records them in ``seen`` and lets ``answer`` write what it will."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["offer"] = await reader.readexactly(3)
        head = await reader.readexactly(5)  # version, command, reserved, type, name length
        name = await reader.readexactly(head[4])
        seen["connect"] = head + name + await reader.readexactly(2)
        seen["request"] = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        await answer(writer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def get(socks: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=tor_socks.transport(socks), timeout=10) as http:
        return await http.get("http://abcdef.onion/v1/descriptor")


async def test_the_request_leaves_with_the_handshake_and_the_name_goes_to_the_proxy() -> None:
    seen: dict[str, bytes] = {}

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(SUCCEEDED + RESPONSE)  # answers and response in one segment

    async with proxy(answer, seen) as socks:
        response = await get(socks)
    assert response.status_code == 200 and response.text == "hello"
    assert seen["offer"] == b"\x05\x01\x00"  # SOCKS5, one method: no authentication
    assert seen["connect"] == b"\x05\x01\x00\x03\x0cabcdef.onion\x00\x50"  # a name, port 80
    assert seen["request"].startswith(b"GET /v1/descriptor HTTP/1.1\r\n")


async def test_answers_that_arrive_a_byte_at_a_time_and_with_a_name_are_taken_whole() -> None:
    named = b"\x05\x00" + b"\x05\x00\x00\x03\x04tor!" + b"\x00\x00"

    async def answer(writer: asyncio.StreamWriter) -> None:
        for byte in named + RESPONSE:
            writer.write(bytes([byte]))
            await writer.drain()

    async with proxy(answer, {}) as socks:
        response = await get(socks)
    assert response.text == "hello"


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (b"\x05\x00\x05\x04\x00\x01" + bytes(6), "Proxy Server could not connect: Host unreachable."),
        (b"\x05\x00\x05\x01\x00\x01" + bytes(6), "Proxy Server could not connect: General server failure."),
        (b"\x05\x02\x05\x00\x00\x01" + bytes(6), "asks for authentication"),
        (b"\x05\x00\x04\x00\x00\x01" + bytes(6), "malformed"),
        (b"\x05\x00\x05", "closed the connection during the handshake"),
    ],
)
async def test_a_refusal_or_garbage_is_a_proxy_error_that_says_which(answers: bytes, message: str) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(answers)

    async with proxy(answer, {}) as socks:
        with pytest.raises(httpx.ProxyError, match=message):
            await get(socks)
