"""Tor's SOCKS port with optimistic data: a request leaves with the handshake, not after it.

A SOCKS5 client normally waits for the proxy's answer before it sends its first byte. Over
Tor that answer is the stream's CONNECTED cell, a whole round trip of the circuit away:
to an onion service, six relays and back (0.36 s on the testnet with --wan, often a
second on the live network). Tor accepts data that follows the CONNECT request at once
and sends it behind the BEGIN cell ("optimistic data", tor-spec's socks-extensions.txt),
so the box's answer comes one round trip sooner. Every new connection to a box saves
it: each deploy, invocation and attachment opens one.

What the stream does, over any ``httpcore`` network stream to the SOCKS port:

- its first write sends the method offer (no authentication), the CONNECT request and the
  caller's bytes in one go (built with ``socksio``, the SOCKS package httpx itself uses);
- its first read takes the two answers off the front and hands on what follows them. A
  refusal raises :class:`httpcore.ProxyError` with the reply's name ("Host unreachable"),
  as httpx's own SOCKS proxy does, so callers that retry refusals keep working. Nothing
  the refused stream carried reached the box: tor drops optimistic data of a stream
  that ends before it connects.

Example (a box's API, as :class:`bento.client.box.Box` reaches it)::

    async with httpx.AsyncClient(transport=tor_socks.transport("127.0.0.1:9050")) as http:
        response = await http.get("http://<onion>.onion/v1/descriptor")
"""

from __future__ import annotations

import typing

import httpcore
import httpx
from socksio.exceptions import ProtocolError as SocksProtocolError
from socksio.socks5 import (
    SOCKS5AuthMethod,
    SOCKS5AuthMethodsRequest,
    SOCKS5AuthReply,
    SOCKS5Command,
    SOCKS5CommandRequest,
    SOCKS5Reply,
    SOCKS5ReplyCode,
)

_ADDRESS_BYTES = {1: 4, 4: 16}  # by address type; 3 (a name) has its length in a byte
_MOST_REPLY_BYTES = 2 + 4 + 1 + 255 + 2


def transport(socks: str, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport that reaches every host through the SOCKS5 port ``socks`` (host:port),
    names resolved by the proxy (Tor), with optimistic data."""
    host, _, port = socks.rpartition(":")
    limits = limits or httpx.Limits()
    proxied = httpx.AsyncHTTPTransport(limits=limits)
    # httpx builds its pool in its constructor and has no parameter for the network
    # backend that httpcore takes; this replaces the pool it built, before any use.
    proxied._pool = httpcore.AsyncConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=OptimisticSocks(host.strip("[]"), int(port)),
    )
    return proxied


class OptimisticSocks(httpcore.AsyncNetworkBackend):
    """Connections to any host:port, made through a SOCKS5 proxy (see the module)."""

    def __init__(self, proxy_host: str, proxy_port: int, backend: httpcore.AsyncNetworkBackend | None = None):
        self.proxy = (proxy_host, proxy_port)
        self._backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            *self.proxy, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return OptimisticStream(stream, host, port)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a SOCKS proxy reaches hosts, not local sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class OptimisticStream(httpcore.AsyncNetworkStream):
    """A stream to ``host:port`` through the SOCKS5 proxy at the other end of ``inner``."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, host: str, port: int) -> None:
        self._inner = inner
        self._handshake: bytes | None = (
            SOCKS5AuthMethodsRequest([SOCKS5AuthMethod.NO_AUTH_REQUIRED]).dumps()
            + SOCKS5CommandRequest.from_address(SOCKS5Command.CONNECT, (host, port)).dumps()
        )
        self._answered = False
        self._early = b""  # what followed the proxy's answers in the same read

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self._handshake is not None:
            buffer, self._handshake = self._handshake + buffer, None
        await self._inner.write(buffer, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if not self._answered:
            await self._take_answers(timeout)
        if self._early:
            data, self._early = self._early[:max_bytes], self._early[max_bytes:]
            return data
        return await self._inner.read(max_bytes, timeout)

    async def _take_answers(self, timeout: float | None) -> None:  # noqa: ASYNC109
        if self._handshake is not None:  # read before any write: the handshake goes alone
            await self.write(b"", timeout)
        received = b""
        while (length := _answers_length(received)) is None or len(received) < length:
            chunk = await self._inner.read(_MOST_REPLY_BYTES, timeout)
            if not chunk:
                raise httpcore.ProxyError("the SOCKS proxy closed the connection during the handshake")
            received += chunk
        try:
            method = SOCKS5AuthReply.loads(received[:2]).method
            reply = SOCKS5Reply.loads(received[2:length])
        except SocksProtocolError as exc:
            raise httpcore.ProxyError(f"the SOCKS proxy answered malformed bytes: {exc}") from None
        if method != SOCKS5AuthMethod.NO_AUTH_REQUIRED:
            raise httpcore.ProxyError("the SOCKS proxy asks for authentication, which Tor's does not")
        if reply.reply_code != SOCKS5ReplyCode.SUCCEEDED:
            said = reply.reply_code.name.replace("_", " ").capitalize()
            raise httpcore.ProxyError(f"Proxy Server could not connect: {said}.")
        self._answered, self._early = True, received[length:]

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        if not self._answered:
            await self._take_answers(timeout)
        return await self._inner.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


def _answers_length(received: bytes) -> int | None:
    """The length of the method answer and the CONNECT reply at the front of ``received``,
    once enough of it is there to tell; None before."""
    if len(received) < 2 + 5:
        return None
    address_type = received[2 + 3]
    if address_type == 3:
        return 2 + 4 + 1 + received[2 + 4] + 2
    return 2 + 4 + _ADDRESS_BYTES.get(address_type, 4) + 2
