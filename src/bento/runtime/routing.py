"""Every TCP connection and name lookup a function makes goes through the broker.

Libraries open their own sockets (urllib3 and so requests, httpx, asyncio streams):
they create a socket, resolve with ``getaddrinfo`` and call ``connect``. Inside the
sandbox that connect would reach only the sandbox's own loopback (its network namespace
has nothing else). So ``socket.socket.connect`` (and ``connect_ex``) of a TCP socket
asks the broker for the connection instead and puts the brokered socket in place of the
function's, at the same file descriptor (``dup2``): the library keeps its socket object
and never notices. asyncio's ``loop.sock_connect`` calls the same method, so asyncio
streams are covered too (the broker's round trip blocks the loop briefly).

A refusal raises :class:`PermissionError` with the broker's reason; a failed connection
raises the OSError the broker saw (ConnectionRefusedError, TimeoutError, ...).
"""

from __future__ import annotations

import errno
import os
import socket

from bento.runtime import net

TYPE_CHECKING = False  # importing typing would cost the sandbox ~3 ms of start-up
if TYPE_CHECKING:
    from typing import Any

_INET = (socket.AF_INET, socket.AF_INET6)
_real_init = socket.socket.__init__
_COPIED_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY), (socket.SOL_SOCKET, socket.SO_KEEPALIVE))


def install() -> None:
    socket.socket.__init__ = _init  # type: ignore[method-assign]
    socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
    socket.gethostbyname = _gethostbyname
    socket.gethostbyname_ex = _gethostbyname_ex


def _brokered(sock: socket.socket) -> bool:
    return sock.family in _INET and sock.type == socket.SOCK_STREAM


def _init(self: socket.socket, family: Any = -1, type: Any = -1, proto: Any = -1, fileno: Any = None) -> None:
    try:
        _real_init(self, family, type, proto, fileno)
    except PermissionError:
        if fileno is None and family in (-1, *_INET):
            raise PermissionError(
                errno.EPERM,
                'this function may not open TCP/UDP sockets of its own: add "network" to the manifest\'s '
                "needs.syscall_profiles (its connections still go through the Bento broker)",
            ) from None
        raise


def _connect(self: socket.socket, address: Any) -> None:
    if not _brokered(self):
        return net._real_connect(self, address)  # Unix sockets, UDP: the sandbox's own business
    timeout = self.gettimeout()
    brokered = net.connect(str(address[0]), int(address[1]))
    with brokered:
        for level, option in _COPIED_OPTIONS:  # what a library set before connecting
            try:  # noqa: SIM105 (contextlib would cost the sandbox start-up time)
                brokered.setsockopt(level, option, self.getsockopt(level, option))
            except OSError:
                pass
        os.dup2(brokered.fileno(), self.fileno())
    self.settimeout(timeout)  # the descriptor is new: give it the socket's blocking mode
    return None


def _connect_ex(self: socket.socket, address: Any) -> int:
    try:
        _connect(self, address)
    except OSError as exc:
        return exc.errno or (errno.EACCES if isinstance(exc, PermissionError) else errno.ECONNREFUSED)
    return 0


def _gethostbyname(host: str) -> str:
    return _gethostbyname_ex(host)[2][0]


def _gethostbyname_ex(host: str) -> tuple[str, list[str], list[str]]:
    addresses = [a for a in net.resolve(host) if ":" not in a]
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r} has no IPv4 address")
    return host, [], addresses
