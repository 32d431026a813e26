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
raises the OSError the broker saw (ConnectionRefusedError, TimeoutError, ...). The
sandbox's seccomp filter refuses the kernel's own ``connect``, ``bind`` and ``listen``
(bento.sandbox.seccomp), so a socket the broker granted cannot be pointed anywhere else:
calling them on a socket that is not the broker's business says so in its PermissionError.
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
_real_connect = socket.socket.connect
_real_bind = socket.socket.bind
_real_listen = socket.socket.listen
_COPIED_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY), (socket.SOL_SOCKET, socket.SO_KEEPALIVE))
_NO_CONNECT = (
    "a Bento sandbox makes no connections of its own: TCP connections go through the broker "
    "(socket.connect of a TCP socket, or api.connect); Unix and UDP sockets cannot connect"
)
_NO_LISTEN = "a Bento sandbox binds and listens on nothing itself: api.listen() gives a listener"


def install() -> None:
    """Route the socket module's connections and lookups through the broker (bento.runtime.net)."""
    socket.create_connection = net.create_connection  # type: ignore[assignment]
    socket.getaddrinfo = net.getaddrinfo
    socket.socket.__init__ = _init  # type: ignore[method-assign]
    socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
    socket.socket.bind = _bind  # type: ignore[method-assign,assignment]
    socket.socket.listen = _listen  # type: ignore[method-assign,assignment]
    socket.gethostbyname = _gethostbyname
    socket.gethostbyname_ex = _gethostbyname_ex


def _refused(exc: PermissionError, why: str) -> PermissionError:
    return PermissionError(exc.errno, f"{exc.strerror} ({why})")


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
        try:
            return _real_connect(self, address)  # Unix sockets, UDP: refused by the sandbox
        except PermissionError as exc:
            raise _refused(exc, _NO_CONNECT) from None
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


def _bind(self: socket.socket, address: Any) -> None:
    try:
        _real_bind(self, address)
    except PermissionError as exc:
        raise _refused(exc, _NO_LISTEN) from None


def _listen(self: socket.socket, *backlog: int) -> None:
    try:
        _real_listen(self, *backlog)
    except PermissionError as exc:
        raise _refused(exc, _NO_LISTEN) from None


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
