"""The network, as a function sees it: every connection is made by the broker.

``connect``, ``listen`` and ``resolve`` ask the server's broker over the inherited
broker socket (``SOCK_SEQPACKET``: a request is one message, a 4-byte tag and a JSON
object; its reply is one message with the same tag, a granted socket attached); it
checks the request against the manifest and the relay's exit policy and hands back a
real socket. The tags let a function's threads ask at once: each waits for its own
reply, whichever thread happens to read it. ``socket.create_connection``,
``socket.getaddrinfo`` and every TCP socket's ``connect`` are routed here too
(bento.runtime.routing), so ``urllib.request``, requests, httpx and asyncio streams work
unchanged. A refused request raises :class:`PermissionError` with the broker's reason.
"""

from __future__ import annotations

import json
import socket
import struct
import threading

TYPE_CHECKING = False  # importing typing would cost the sandbox ~3 ms of start-up
if TYPE_CHECKING:
    from typing import Any

_broker: socket.socket | None = None
MAX_REPLY = 65536  # the JSON after the tag (bento.server.broker.service.MAX_REPLY)
_TAG = struct.Struct(">I")
_state = threading.Condition()  # guards everything below
_last_tag = 0
_waiting: set[int] = set()  # tags sent whose replies nobody has read yet
_replies: dict[int, tuple[bytes, list[int]]] = {}  # read, not yet taken by the thread that asked
_reading = False  # one thread reads the socket at a time, for everyone
_gone = False  # the broker closed its end
_real_getaddrinfo = socket.getaddrinfo


def _bind(sock: socket.socket) -> None:
    """Ask ``sock``, the broker's socket this process inherited, from now on."""
    global _broker
    _broker = sock


class Busy(PermissionError):
    """Refused because a budget of the function's (``budget``: its name, as ``storage_transfers``)
    is spent for now: the same request may pass once one of its units comes back."""

    def __init__(self, budget: str, message: str) -> None:
        super().__init__(message)
        self.budget = budget


def _ask(request: dict[str, Any]) -> tuple[dict[str, Any], socket.socket | None]:
    if _broker is None:
        raise PermissionError("no network broker in this process (not running inside Bento)")
    data, fds = _exchange(_broker, json.dumps(request).encode())
    sock = socket.socket(fileno=fds[0]) if fds else None  # at most one: recv_fds reads one
    try:
        reply = json.loads(data)
        if not isinstance(reply, dict):
            raise ConnectionError("the Bento broker sent a malformed reply")
        if not reply.get("ok"):
            error = str(reply.get("error", "refused"))
            if reply.get("denied"):
                if isinstance(busy := reply.get("busy"), str):
                    raise Busy(busy, f"Bento broker: {error}")
                raise PermissionError(f"Bento broker: {error}")
            code = reply.get("errno")  # e.g. ConnectionRefusedError, as a direct connect would raise
            raise OSError(code, error) if isinstance(code, int) else OSError(error)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    return reply, sock


def _exchange(broker: socket.socket, body: bytes) -> tuple[bytes, list[int]]:
    """Send one tagged request and wait for its reply: (its JSON, the descriptors it carries).

    Whichever waiting thread finds nobody reading reads the next reply and hands it to
    its owner (leader and followers), so no thread of the function's is needed just to
    read the socket, and a slow request (a circuit being built) holds up no other."""
    global _last_tag, _reading, _gone
    with _state:
        _last_tag = _last_tag % 0xFFFFFFFF + 1  # 1 .. 2**32 - 1: tag 0 answers a message with none
        tag = _last_tag
        _waiting.add(tag)
    try:
        broker.send(_TAG.pack(tag) + body)
        with _state:
            while tag not in _replies:
                if _gone:
                    raise ConnectionError("the Bento broker went away")
                if _reading:
                    _state.wait()
                    continue
                _reading = True
                _state.release()
                try:
                    message, fds, _flags, _addr = socket.recv_fds(broker, _TAG.size + MAX_REPLY, 1)
                finally:
                    _state.acquire()
                    _reading = False
                    _state.notify_all()
                if len(message) < _TAG.size:
                    _gone = True
                    continue
                (got,) = _TAG.unpack_from(message)
                if got in _waiting:
                    _replies[got] = (message[_TAG.size :], fds)
                else:  # a reply nobody waits for (its thread gave up): nothing of it is kept
                    for fd in fds:
                        socket.socket(fileno=fd).close()
            return _replies.pop(tag)
    finally:
        with _state:
            _waiting.discard(tag)
            unclaimed = _replies.pop(tag, None)
        if unclaimed is not None:  # we are leaving with an exception: its socket is nobody's
            for fd in unclaimed[1]:
                socket.socket(fileno=fd).close()


def connect(host: str, port: int, timeout: float | None = None) -> socket.socket:
    """A TCP connection to ``host:port``, opened by the broker if policy allows it."""
    _, sock = _ask({"op": "connect", "host": host, "port": int(port)})
    assert sock is not None
    sock.settimeout(timeout)
    return sock


def listen(port: int = 0) -> socket.socket:
    """A listening TCP socket on the box's loopback (port 0: any free port)."""
    _, sock = _ask({"op": "listen", "port": int(port)})
    assert sock is not None
    return sock


def resolve(host: str) -> list[str]:
    """The addresses of ``host``, resolved by the broker (the sandbox has no resolver)."""
    reply, _ = _ask({"op": "resolve", "host": host})
    return list(reply["addresses"])


def create_connection(
    address: tuple[str, int],
    timeout: float | object | None = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: Any = None,
    *,
    all_errors: bool = False,
) -> socket.socket:
    host, port = address[0], address[1]
    sock = connect(host, port)
    if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
        sock.settimeout(timeout)  # type: ignore[arg-type]
    return sock


def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
    if host is None or _is_ip(host):
        return _real_getaddrinfo(host, port, family, type, proto, flags)
    numeric_port = int(port) if port is not None else 0
    results = []
    for address in resolve(host.decode() if isinstance(host, bytes) else str(host)):
        fam = socket.AF_INET6 if ":" in address else socket.AF_INET
        if family in (0, fam):
            results.append((fam, type or socket.SOCK_STREAM, proto or 6, "", (address, numeric_port)))
    if not results:
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r} has no usable address")
    return results


def _is_ip(host: Any) -> bool:
    import ipaddress  # only when resolving: it is slow to import

    try:
        ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
    except ValueError:
        return False
    return True
