"""The broker: the only way an instance reaches the network.

An instance has no network interface but its own loopback. It asks the broker, over a
Unix socket inherited from the server, to resolve a name, connect, or listen. The
broker checks each request against the function's manifest, the node policy, and the
relay's *current* exit policy (read from tor), never lets a function reach the box's
own services (tor's control, OR and SOCKS ports, the Bento API), does the work, and
passes the resulting socket into the sandbox (SCM_RIGHTS). The function then holds a
real socket, and every byte it sends leaves with the relay's exit-policy blessing.

Requests and replies are one JSON object per message; a reply that carries a socket
carries it as ancillary data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import stem.control

from bento.errors import BentoError
from bento.protocol.policy import Needs, NodePolicy
from bento.server.function_tor import InstanceTor
from bento.server.store import StorageChannel, StorageRefused

log = logging.getLogger("bento.broker")
MAX_REQUEST = 4096
CONNECT_TIMEOUT = 30.0


class Denied(Exception):
    """A request the broker refuses; the message goes back to the function."""


@dataclass
class Gatekeeper:
    """What every broker consults: the relay's exit policy and the box's own addresses.

    Kept current by the server (:func:`refresh`), so a relay operator's change of exit
    policy applies to running functions too.
    """

    exit_allows: Callable[[str, int], bool]  # (ip, port) -> the relay's exit policy accepts it
    forbidden: set[tuple[str, int]] = field(default_factory=set)  # our own listeners

    def check(self, address: str, port: int) -> None:
        ip = ipaddress.ip_address(address)
        if (str(ip), port) in self.forbidden or (ip.is_unspecified and port) or _own_wildcard(self, port, ip):
            raise Denied(f"{address}:{port} is one of this box's own services")
        if not self.exit_allows(str(ip), port):
            raise Denied(f"the relay's exit policy does not allow {address}:{port}")


def _own_wildcard(gate: Gatekeeper, port: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # A service bound to 0.0.0.0 is reachable at every local address, loopback included.
    return ip.is_loopback and any(host in ("0.0.0.0", "::") and p == port for host, p in gate.forbidden)


@dataclass
class Broker:
    """Serves one instance's requests until it exits."""

    needs: Needs
    policy: NodePolicy
    gate: Gatekeeper
    storage: StorageChannel | None = None  # None: the manifest asks for no storage
    tor: InstanceTor | None = None  # Tor for functions, when the box offers it
    denied: int = 0
    granted: int = 0

    async def aclose(self) -> None:
        """The instance has ended: give up what it held in Tor."""
        if self.tor is not None:
            await self.tor.close()

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        try:
            while True:
                try:
                    request = await loop.sock_recv(sock, MAX_REQUEST)
                except OSError:
                    return
                if not request:
                    return
                reply, fd = await self._answer(request)
                try:
                    await _send(sock, json.dumps(reply).encode(), fd)
                except OSError:
                    return
                finally:
                    if fd is not None:
                        fd.close()
        finally:
            if self.storage is not None:
                await self.storage.aclose()

    async def _answer(self, raw: bytes) -> tuple[dict[str, Any], socket.socket | None]:
        try:
            request = json.loads(raw)
            op = request.get("op")
            if op == "resolve":
                return {"ok": True, "addresses": await self._resolve(str(request["host"]))}, None
            if op == "connect":
                sock = await self._connect(str(request["host"]), int(request["port"]))
                return {"ok": True, "peer": list(sock.getpeername()[:2])}, sock
            if op == "listen":
                sock = self._listen(int(request.get("port", 0)))
                return {"ok": True, "address": list(sock.getsockname()[:2])}, sock
            if isinstance(op, str) and op.startswith("storage."):
                if self.storage is None:
                    raise Denied("storage is not in this function's manifest (needs.storage_mb)")
                return await self.storage.answer(op, request)
            if isinstance(op, str) and op.startswith("tor."):
                if self.tor is None:
                    raise Denied("this box offers no Tor for functions, or the manifest asks for none")
                reply, fd = await self.tor.handle(op, request)
                self.granted += 1
                return {"ok": True, **reply}, fd
            raise Denied(f"unknown broker request {op!r}")
        except (Denied, StorageRefused, PermissionError) as exc:
            self.denied += 1
            return {"ok": False, "error": str(exc), "denied": True}, None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.denied += 1
            return {"ok": False, "error": f"malformed broker request: {exc}", "denied": True}, None
        except BentoError as exc:
            return {"ok": False, "error": exc.message, "denied": False}, None
        except OSError as exc:
            # The errno lets the function's runtime raise the same exception class it would have.
            code = exc.errno or (errno.ETIMEDOUT if isinstance(exc, TimeoutError) else None)
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "denied": False, "errno": code}
            return reply, None

    def _require_network(self) -> None:
        if not (self.needs.network and self.policy.network.allowed):
            raise Denied("network access is not in this function's manifest (needs.network)")

    async def _resolve(self, host: str) -> list[str]:
        self._require_network()
        if len(host) > 253:
            raise Denied("host name too long")
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})

    async def _connect(self, host: str, port: int) -> socket.socket:
        self._require_network()
        if not 0 < port < 65536:
            raise Denied(f"port {port} is out of range")
        last: Exception = Denied(f"{host} did not resolve")
        for address in await self._resolve(host):
            self.gate.check(address, port)  # every address, before any connection
        for address in await self._resolve(host):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await asyncio.get_running_loop().sock_connect(sock, (address, port))
            except (OSError, TimeoutError) as exc:
                sock.close()
                last = exc
                continue
            self.granted += 1
            return sock
        raise last if isinstance(last, OSError | Denied) else OSError(str(last))

    def _listen(self, port: int) -> socket.socket:
        if not (self.needs.listen and self.policy.network.listen):
            raise Denied("listening is not in this function's manifest (needs.listen)")
        if port and port < 1024:
            raise Denied("privileged ports are not available")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        if self.tor is not None:
            self.tor.listening(sock)  # an onion service may lead to it
        self.granted += 1
        return sock


async def _send(sock: socket.socket, payload: bytes, fd: socket.socket | None) -> None:
    loop = asyncio.get_running_loop()
    if fd is None:
        await loop.sock_sendall(sock, payload)
        return
    while True:
        try:
            socket.send_fds(sock, [payload], [fd.fileno()])
            return
        except BlockingIOError:
            await asyncio.sleep(0.01)


def refresh(gate: Gatekeeper, controller: Any, own: set[tuple[str, int]]) -> None:
    """Re-read the relay's exit policy and listeners from tor (blocking: Stem)."""
    forbidden = set(own)
    for kind in ("control", "or", "dir", "socks", "extor", "httptunnel", "trans", "natd", "dns"):
        with contextlib.suppress(Exception):
            for address, port in controller.get_listeners(getattr(stem.control.Listener, kind.upper())):
                forbidden.add((address, int(port)))
    controller.clear_cache()  # Stem caches the exit policy; we want tor's current one
    policy = controller.get_exit_policy()

    def exit_allows(ip: str, port: int) -> bool:
        try:
            return bool(policy.can_exit_to(ip, port))
        except ValueError:
            return False

    gate.exit_allows, gate.forbidden = exit_allows, forbidden


def closed_gate() -> Gatekeeper:
    """A gatekeeper that allows nothing (before tor has been asked)."""
    return Gatekeeper(exit_allows=lambda _ip, _port: False)
