"""Reaching other boxes from inside a function: the broker opens every connection.

A function has no network and no SOCKS port. Its box's Tor for functions opens the
stream to the other box's onion service (the manifest's ``needs.call_boxes``, the
policy's ``tor.call_boxes``: only onion services that relays advertise as Bento boxes)
and passes the connected socket in; this module makes that httpx's network, so the
client library works unchanged, WebSocket session streams included.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from bento.client.backend_transport import BackendTransport
from bento.runtime import net


class _Stream(httpcore.AsyncNetworkStream):
    """A broker-made socket as httpcore's byte stream (asyncio streams underneath)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("no answer from the box in time") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("the box did not take our bytes in time") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from None

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def get_extra_info(self, info: str) -> Any:
        return self._writer.get_extra_info("socket") if info == "socket" else None


class BrokerBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network, made of streams the box's broker opens over Tor."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                sock = await asyncio.to_thread(_open, host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no stream to {host}:{port} in time") from None
        except OSError as exc:  # PermissionError: refused by the broker, with its reason
            raise httpcore.ConnectError(str(exc)) from None
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return _Stream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a function reaches other boxes only over Tor")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


KEEPALIVE_EXPIRY = 5.0  # httpx's default: seconds an idle connection to a box is kept


def _open(host: str, port: int) -> socket.socket:
    _, sock = net._ask({"op": "tor.stream", "host": host, "port": port})
    if sock is None:
        raise OSError("the broker answered without a socket")
    return sock


class BrokerTransport(BackendTransport):
    """``Box(..., transport=BrokerTransport())``: the client, inside a function."""

    def __init__(self) -> None:
        # httpcore's pool keeps idle connections for ever unless told; httpx's own expiry
        # (5 s) is shorter than the box's keep-alive, so the client always lets go first
        # and never sends on a connection the box is closing (seen: a LoadBalancer's replica
        # start failed with "Server disconnected", and that box was avoided for a minute).
        # At most 10 connections, without a cap on idle ones: httpcore's pool's defaults.
        limits = httpx.Limits(
            max_connections=10, max_keepalive_connections=None, keepalive_expiry=KEEPALIVE_EXPIRY
        )
        super().__init__(BrokerBackend(), limits)


def inside_a_function() -> bool:
    """True when this process is a Bento instance with a broker to ask."""
    return net._broker is not None
