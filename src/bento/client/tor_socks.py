"""Tor's SOCKS port with optimistic data: a request leaves with the handshake, not after it.

A SOCKS5 client normally waits for the proxy's answer before it sends its first byte. Over
Tor that answer is the stream's CONNECTED cell, a whole round trip of the circuit away:
to an onion service, six relays and back (0.36 s on the testnet with --wan, often a
second on the live network). Tor accepts data that follows the CONNECT request at once
and sends it behind the BEGIN cell ("optimistic data", tor-spec's socks-extensions.txt),
so the box's answer comes one round trip sooner. Every new connection to a box saves
it: each deploy, invocation and attachment opens one.

What the stream does, over any ``httpcore`` network stream to the SOCKS port:

- when it is made, it agrees the method with the proxy (no authentication, or a user name
  and password: tor isolates streams by them), a round trip to the local tor only;
- its first write sends the CONNECT request and the caller's bytes in one go (the
  messages built with ``socksio``, the SOCKS package httpx itself uses);
- its first read takes the proxy's answer off the front and hands on what follows it. A
  refusal raises :class:`httpcore.ProxyError` with the reply's name ("Host unreachable"),
  as httpx's own SOCKS proxy does, so callers that retry refusals keep working. Nothing
  the refused stream carried reached the box: tor drops optimistic data of a stream
  that ends before it connects.

Example (a box's API, as :class:`bento.client.box.Box` reaches it)::

    async with httpx.AsyncClient(transport=tor_socks.transport("circuit-1:x@127.0.0.1:9050")) as http:
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
    SOCKS5UsernamePasswordReply,
    SOCKS5UsernamePasswordRequest,
)

from bento.client.backend_transport import BackendTransport

_ADDRESS_BYTES = {1: 4, 4: 16}  # by address type; 3 (a name) has its length in a byte
_MOST_REPLY_BYTES = 4 + 1 + 255 + 2


def transport(socks: str, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport that reaches every host through the SOCKS5 port ``socks``
    (``[user:password@]host:port``), names resolved by the proxy (Tor), with optimistic data."""
    credentials, _, address = socks.rpartition("@")
    host, _, port = address.rpartition(":")
    user, _, password = credentials.partition(":")
    backend = OptimisticSocks(host.strip("[]"), int(port), (user, password) if credentials else None)
    return BackendTransport(backend, limits)


class OptimisticSocks(httpcore.AsyncNetworkBackend):
    """Connections to any host:port, made through a SOCKS5 proxy (see the module)."""

    def __init__(
        self,
        proxy_host: str,
        proxy_port: int,
        credentials: tuple[str, str] | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.proxy = (proxy_host, proxy_port)
        self.credentials = credentials
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
        try:
            await _agree_method(stream, self.credentials, timeout)
        except BaseException:
            await stream.aclose()
            raise
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
        self._connect: bytes | None = SOCKS5CommandRequest.from_address(
            SOCKS5Command.CONNECT, (host, port)
        ).dumps()
        self._answered = False
        self._early = b""  # what followed the proxy's answer in the same read

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self._connect is not None:
            buffer, self._connect = self._connect + buffer, None
        await self._inner.write(buffer, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if not self._answered:
            await self._take_answers(timeout)
        if self._early:
            data, self._early = self._early[:max_bytes], self._early[max_bytes:]
            return data
        return await self._inner.read(max_bytes, timeout)

    async def _take_answers(self, timeout: float | None) -> None:  # noqa: ASYNC109
        if self._connect is not None:  # read before any write: the request goes alone
            await self.write(b"", timeout)
        received = b""
        while (length := _reply_length(received)) is None or len(received) < length:
            chunk = await self._inner.read(_MOST_REPLY_BYTES, timeout)
            if not chunk:
                raise httpcore.ProxyError("the SOCKS proxy closed the connection before it answered")
            received += chunk
        try:
            reply = SOCKS5Reply.loads(received[:length])
        except SocksProtocolError as exc:
            raise httpcore.ProxyError(f"the SOCKS proxy answered malformed bytes: {exc}") from None
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


async def _agree_method(
    stream: httpcore.AsyncNetworkStream,
    credentials: tuple[str, str] | None,
    timeout: float | None,  # noqa: ASYNC109 (httpcore's)
) -> None:
    """The method offer and, with credentials, the log-in: answered by the local proxy itself."""
    method = SOCKS5AuthMethod.USERNAME_PASSWORD if credentials else SOCKS5AuthMethod.NO_AUTH_REQUIRED
    await stream.write(SOCKS5AuthMethodsRequest([method]).dumps(), timeout)
    try:
        chosen = SOCKS5AuthReply.loads(await _read_exactly(stream, 2, timeout)).method
    except SocksProtocolError as exc:
        raise httpcore.ProxyError(f"the SOCKS proxy answered malformed bytes: {exc}") from None
    if chosen != method:
        raise httpcore.ProxyError(
            f"the SOCKS proxy refused the method {method.name} (it chose {chosen.name})"
        )
    if credentials:
        user, password = (part.encode() for part in credentials)
        await stream.write(SOCKS5UsernamePasswordRequest(user, password).dumps(), timeout)
        if not SOCKS5UsernamePasswordReply.loads(await _read_exactly(stream, 2, timeout)).success:
            raise httpcore.ProxyError("the SOCKS proxy refused the user name and password")


async def _read_exactly(stream: httpcore.AsyncNetworkStream, count: int, timeout: float | None) -> bytes:  # noqa: ASYNC109
    data = b""
    while len(data) < count:
        chunk = await stream.read(count - len(data), timeout)
        if not chunk:
            raise httpcore.ProxyError("the SOCKS proxy closed the connection before it answered")
        data += chunk
    return data


def _reply_length(received: bytes) -> int | None:
    """The length of the CONNECT reply at the front of ``received``, once enough of it is
    there to tell; None before."""
    if len(received) < 5:
        return None
    address_type = received[3]
    if address_type == 3:
        return 4 + 1 + received[4] + 2
    return 4 + _ADDRESS_BYTES.get(address_type, 4) + 2
