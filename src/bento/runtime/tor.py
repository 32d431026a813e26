"""Tor for functions (``api.tor``): the consensus, circuits, streams and onion services.

Everything here is asked of the server's broker, which uses the box's own client-only
tor: a function never holds a control port, and sees and closes only what it made.
The manifest asks (``needs.tor_circuits``: circuits held at once, ``needs.onion_services``:
services published), the box's policy allows (``[policy.tor]``)::

    exits = api.tor.relays(flags=["Exit"], exit_to=("127.0.0.1", 8080))
    circuit = api.tor.circuit(length=3, exit_to=("127.0.0.1", 8080)).wait()
    with circuit.connect("127.0.0.1", 8080) as sock:    # a real socket, over that circuit
        sock.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    circuit.close()

    listener = api.listen()
    service = api.tor.publish(listener, virtual_port=80)  # reachable at service.address
    ...
    service.remove()            # or leave it: it goes when the function's last instance ends

Refusals (not in the manifest, not yours, over a limit) raise :class:`PermissionError`;
failures in Tor (a circuit that failed, an exit that refused) raise :class:`TorError`.
"""

from __future__ import annotations

import socket

from bento.runtime import net

TYPE_CHECKING = False  # importing typing would cost the sandbox ~3 ms of start-up
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Circuit", "OnionService", "Relay", "TorError", "circuit", "circuits", "connect_onion"]
__all__ += ["events", "exit_allows", "publish", "relays"]


class TorError(OSError):
    """Tor could not do it: a circuit failed or closed, a stream was refused, a service not published."""


def _ask(request: dict[str, Any]) -> tuple[dict[str, Any], socket.socket | None]:
    try:
        return net._ask(request)
    except PermissionError:
        raise
    except OSError as exc:
        if type(exc) is OSError:  # the broker's "it failed" (not denied)
            raise TorError(str(exc)) from None
        raise


def _within(request: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """The request, with the seconds its stream may take to connect (the broker allows at most 60)."""
    return request if timeout is None else {**request, "timeout": float(timeout)}


class Relay:
    """A relay in the consensus."""

    __slots__ = ("address", "bandwidth", "fingerprint", "flags", "nickname", "or_port")

    def __init__(self, data: dict[str, Any]) -> None:
        self.fingerprint: str = data["fingerprint"]
        self.nickname: str = data["nickname"]
        self.flags: list[str] = data["flags"]
        self.bandwidth: int = data["bandwidth"]
        self.address: str = data["address"]
        self.or_port: int = data["or_port"]

    def exit_allows(self, host: str, port: int) -> bool:
        return exit_allows(self.fingerprint, host, port)

    def __repr__(self) -> str:
        return f"Relay({self.nickname} ${self.fingerprint} {' '.join(self.flags)})"


def relays(flags: list[str] | tuple[str, ...] = (), exit_to: tuple[str, int] | None = None) -> list[Relay]:
    """Running relays with every flag in ``flags`` (and whose exit allows ``exit_to``)."""
    found: list[Relay] = []
    while True:
        request: dict[str, Any] = {"op": "tor.relays", "flags": list(flags), "offset": len(found)}
        if exit_to is not None:
            request["exit_to"] = [exit_to[0], int(exit_to[1])]
        reply, _ = _ask(request)
        found.extend(Relay(r) for r in reply["relays"])
        if not reply["relays"] or len(found) >= reply["total"]:
            return found


def exit_allows(fingerprint: str, host: str, port: int) -> bool:
    """Whether that relay's exit policy accepts connections to ``host:port``."""
    reply, _ = _ask({"op": "tor.exit_allows", "fingerprint": fingerprint, "host": host, "port": int(port)})
    return bool(reply["allowed"])


class Circuit:
    """A circuit of this instance. ``state``: building, built, failed or closed."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.id: str = data["circuit"]
        self._update(data)

    def _update(self, data: dict[str, Any]) -> None:
        self.path: list[str] = data["path"]
        self.state: str = data["state"]
        self.reason: str = data.get("reason", "")
        self.built_seconds: float | None = data.get("built_seconds")

    def wait(self, timeout: float | None = None) -> Circuit:
        """Wait until it is built (returns it); TorError if it failed or closed,
        TimeoutError if it still builds after ``timeout`` seconds (at most 120)."""
        reply, _ = _ask({"op": "tor.wait", "circuit": self.id, "timeout": timeout})
        self._update(reply)
        if self.state == "building":
            raise TimeoutError(f"circuit {self.id} is still being built")
        if self.state != "built":
            raise TorError(f"circuit {self.id} {self.state}: {self.reason}")
        return self

    def connect(self, host: str, port: int, timeout: float | None = None) -> socket.socket:
        """A TCP stream to ``host:port`` over exactly this circuit (its exit must allow it).
        ``timeout`` (seconds) bounds the connect, as ``socket.create_connection``'s does, and
        is the socket's timeout after. TorError at once if tor gives the stream up (its
        circuit closed, the exit refused or did not answer)."""
        request = {"op": "tor.stream", "circuit": self.id, "host": host, "port": int(port)}
        _, sock = _ask(_within(request, timeout))
        assert sock is not None
        sock.settimeout(timeout)
        return sock

    def close(self) -> None:
        """Close it (its streams end too). Closing it twice is harmless."""
        if self.state in ("building", "built"):
            _ask({"op": "tor.close", "circuit": self.id})
            self.state = "closed"

    def __repr__(self) -> str:
        return f"Circuit({self.id} {self.state} {len(self.path)} hops)"


def circuit(
    path: list[str] | None = None,
    *,
    length: int = 3,
    exit_to: tuple[str, int] | None = None,
    exclude: list[str] | tuple[str, ...] = (),
) -> Circuit:
    """Start building a circuit: through ``path`` (fingerprints, first hop first), or of
    ``length`` hops ending at an exit that allows ``exit_to``, avoiding ``exclude``.
    Returns at once; :meth:`Circuit.wait` waits for it to be built."""
    request: dict[str, Any] = {"op": "tor.circuit"}
    if path is not None:
        request["path"] = list(path)
    else:
        request |= {"length": int(length), "exclude": list(exclude)}
        if exit_to is not None:
            request["exit_to"] = [exit_to[0], int(exit_to[1])]
    reply, _ = _ask(request)
    return Circuit(reply)


def circuits() -> list[Circuit]:
    """This instance's circuits that are not closed yet."""
    reply, _ = _ask({"op": "tor.circuits"})
    return [Circuit(c) for c in reply["circuits"]]


def events(timeout: float = 0.0) -> list[dict[str, Any]]:
    """What happened to this instance's circuits since the last call (built, failed,
    closed), waiting up to ``timeout`` seconds for something to happen."""
    reply, _ = _ask({"op": "tor.events", "timeout": timeout})
    return list(reply["events"])


def connect_onion(address: str, port: int, timeout: float | None = None) -> socket.socket:
    """A stream to an onion service (tor builds the rendezvous circuit, for this instance only)."""
    host = address if address.endswith(".onion") else address + ".onion"
    _, sock = _ask(_within({"op": "tor.stream", "host": host, "port": int(port)}, timeout))
    assert sock is not None
    sock.settimeout(timeout)
    return sock


class OnionService:
    def __init__(self, address: str) -> None:
        self.address = address  # without ".onion"

    def remove(self) -> None:
        _ask({"op": "tor.unpublish", "address": self.address})

    def __repr__(self) -> str:
        return f"OnionService({self.address}.onion)"


def publish(
    listener: socket.socket | int,
    *,
    virtual_port: int = 80,
    key: bytes | None = None,
    client_auth: str | None = None,
    wait: bool = True,
) -> OnionService:
    """Publish an onion service whose ``virtual_port`` leads to ``listener`` (a socket from
    ``api.listen()``, or its port). ``key``: a 32-byte Ed25519 seed to keep an address
    across sessions (default: a new one); ``client_auth``: the base32 X25519 public key of
    the one client allowed in. ``wait``: return once the descriptor is published."""
    import base64

    port = listener if isinstance(listener, int) else listener.getsockname()[1]
    request: dict[str, Any] = {"op": "tor.publish", "port": port, "virtual_port": virtual_port, "wait": wait}
    if key is not None:
        request["key"] = base64.b64encode(key).decode()
    if client_auth is not None:
        request["client_auth"] = client_auth
    reply, _ = _ask(request)
    return OnionService(reply["address"])
