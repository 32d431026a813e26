"""What every broker consults before it connects: the relay's exit policy and the box's own services.

An address is checked in every form it can reach the kernel in. ``::ffff:127.0.0.1`` is
127.0.0.1; ``127.0.0.2`` and ``0.0.0.0`` reach a service bound to 0.0.0.0 (or, on
Linux, anything on loopback); a name resolves to one of those. So the gate asks not
"is this one of our (address, port) pairs" but "is this address this host, and is the
port one of ours": every loopback and unspecified address, and any address a local
interface holds (the kernel says so: binding to it succeeds), counts as this host.

>>> gate = Gatekeeper(exit_allows=lambda ip, port: True, forbidden={("127.0.0.1", 9051)})
>>> for spelling in ("127.0.0.1", "127.0.0.2", "0.0.0.0", "::ffff:127.0.0.1", "::1"):
...     try:
...         gate.check(normalise(spelling), 9051)
...     except Denied as exc:
...         print(spelling, "->", exc)
127.0.0.1 -> 127.0.0.1:9051 is one of this box's own services
127.0.0.2 -> 127.0.0.2:9051 is one of this box's own services
0.0.0.0 -> 0.0.0.0 is not a destination
::ffff:127.0.0.1 -> 127.0.0.1:9051 is one of this box's own services
::1 -> ::1:9051 is one of this box's own services
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import stem.control

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LISTENERS = ("control", "or", "dir", "socks", "extor", "httptunnel", "trans", "natd", "dns")


class Denied(Exception):
    """A request the broker refuses; the message goes back to the function."""


def normalise(text: str) -> IPAddress:
    """The one canonical form of an address (IPv4-mapped IPv6 becomes IPv4); Denied if unusable."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise Denied(f"{text!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            raise Denied(f"{text}: scoped (link-local) IPv6 addresses are not reachable through the broker")
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if 1 < int(ip) < 1 << 32:  # deprecated IPv4-compatible form (::a.b.c.d): refuse, do not guess
            raise Denied(f"{text}: IPv4-compatible IPv6 addresses are not reachable through the broker")
    return ip


def _views(ip: IPAddress) -> Iterator[IPAddress]:
    """The address, and any IPv4 address it embeds (6to4, Teredo), which a tunnel could deliver to."""
    yield ip
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            yield ip.sixtofour
        if ip.teredo is not None:
            yield from ip.teredo


def is_this_host(ip: IPAddress) -> bool:
    """Whether a connection to ``ip`` ends on this machine: loopback, unspecified, or an own address."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))  # succeeds only for an address a local interface holds
        except OSError:
            return False
    return True


@dataclass
class Gatekeeper:
    """The relay's exit policy and the box's own listeners, kept current by :func:`refresh`,
    so that a relay operator's change of exit policy applies to running functions too."""

    exit_allows: Callable[[str, int], bool]  # (ip, port) -> the relay's exit policy accepts it
    forbidden: set[tuple[str, int]] = field(default_factory=set)  # our own listeners

    def check(self, ip: IPAddress, port: int, *, private: bool = True, exit_policy: bool = True) -> None:
        """Raise :class:`Denied` unless a function may reach ``ip:port`` (``ip`` normalised).

        ``private``: the node policy lets functions reach loopback, private and other
        non-global addresses (a test network does); this box's own services never.
        ``exit_policy``: the connection leaves from this relay, so its exit policy applies
        (a Tor stream leaves from another relay, whose policy the consensus gives)."""
        own_ports = {p for _, p in self.forbidden}
        for view in _views(ip):
            if view.is_unspecified:
                raise Denied(f"{view} is not a destination")
            if port in own_ports and is_this_host(view):
                raise Denied(f"{ip}:{port} is one of this box's own services")
        for view in _views(ip):
            if exit_policy and not self.exit_allows(str(view), port):
                raise Denied(f"the relay's exit policy does not allow {ip}:{port}")
            if not private and not view.is_global:
                raise Denied(f"{ip} is not a public address (loopback, private or reserved)")


def refresh(gate: Gatekeeper, controller: Any, own: set[tuple[str, int]]) -> None:
    """Re-read the relay's exit policy and listeners from tor (blocking: Stem).

    It fails closed: if tor cannot say which ports are its own, or what its exit policy
    is, the gate denies every destination until a later refresh succeeds, and the error
    goes to the caller (a gate with a port missing from its forbidden set would let a
    function reach that service)."""
    try:
        forbidden = set(own)
        for kind in _LISTENERS:
            for address, port in controller.get_listeners(getattr(stem.control.Listener, kind.upper())):
                forbidden.add((address, int(port)))
        controller.clear_cache()  # Stem caches the exit policy; we want tor's current one
        policy = controller.get_exit_policy()
    except BaseException:
        gate.exit_allows = closed_gate().exit_allows
        raise

    def exit_allows(ip: str, port: int) -> bool:
        try:
            return bool(policy.can_exit_to(ip, port))
        except ValueError:
            return False

    gate.exit_allows, gate.forbidden = exit_allows, forbidden


def closed_gate() -> Gatekeeper:
    """A gatekeeper that allows nothing (before tor has been asked)."""
    return Gatekeeper(exit_allows=lambda _ip, _port: False)
