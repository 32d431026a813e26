"""A Tor circuit of its own for each right: what a box cannot link by token, it cannot link by circuit.

A box sees which of its requests arrive on one rendezvous circuit. Had a client sent all its
requests on one circuit, the box could tell that two functions have one owner, that the
holder of one Dropbox capability also holds another, or, worst, which signing gave a
blinded token (``bento tokens``): the token is spent on the circuit that fetched it, and
the blind signature's promise is gone.

So every request a :class:`bento.client.box.Box` makes names the right it acts under (its
bearer token; a session's requests, the token that opened the session) in the request
extension :data:`EXTENSION`, and :class:`CircuitTransport` sends it through the SOCKS port with
a user name made from that right. Tor keeps streams whose SOCKS user names differ on
different circuits (``IsolateSOCKSAuth``, on for every SocksPort by default), so requests under
one right share a circuit (the box can link them by the token anyway) and requests under
two rights never do. The user name is a keyed hash of the right (:func:`circuit_name`): it
reaches only the local tor, and never the token itself. A request under no right (a
descriptor, an upload) goes on the SOCKS address's own circuit.

    >>> circuit_name("pt2.one") == circuit_name("pt2.one") != circuit_name("pt2.two")
    True
    >>> len(circuit_name("pt2.one"))
    32
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bento.client.backend_transport import BackendTransport

EXTENSION = "bento.right"  # request extension: the right a request acts under
# Connection pools of rights no longer used that one client keeps; the least recently used
# idle one is closed beyond this (its keep-alive stream to the box with it).
MOST_IDLE_CIRCUITS = 16
Connect = Callable[[tuple[str, str] | None], BackendTransport]  # a circuit's transport, by SOCKS log-in


def circuit_name(right: str) -> str:
    """The SOCKS user name of ``right``'s circuit: the same for one right, unrelated across rights."""
    return hashlib.blake2b(right.encode(), digest_size=16, person=b"bento-circuit").hexdigest()


def extensions(right: str | None) -> dict[str, str]:
    """What a request under ``right`` carries to :class:`CircuitTransport` (``{}``: under none)."""
    return {} if not right else {EXTENSION: right}


@dataclass
class _Circuit:
    transport: BackendTransport
    requests: int = 0  # requests inside handle_async_request now


class CircuitTransport(httpx.AsyncBaseTransport):
    """An httpx transport that puts each right's requests on a circuit of their own (see the
    module): ``connect(log_in)`` makes the transport of one circuit, through the SOCKS port
    with that user name and password; ``log_in``, the caller's own (None: no log-in), is kept
    for requests under no right and prefixes the others' user names.
    """

    def __init__(self, log_in: tuple[str, str] | None, connect: Connect) -> None:
        self._log_in = log_in
        self._connect = connect
        self._circuits: dict[str, _Circuit] = {}  # by right's circuit name; least recently used first

    def _credentials(self, name: str) -> tuple[str, str] | None:
        if not name:
            return self._log_in
        if self._log_in is None:
            return (name, "bento")
        user, password = self._log_in  # a user name the caller chose isolates this client from others
        return (f"{user}.{name}", password)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        right = request.extensions.get(EXTENSION)
        name = circuit_name(right) if isinstance(right, str) and right else ""
        circuit = self._circuits.pop(name, None) or _Circuit(self._connect(self._credentials(name)))
        self._circuits[name] = circuit  # now the most recently used
        circuit.requests += 1
        try:
            return await circuit.transport.handle_async_request(request)
        finally:
            circuit.requests -= 1
            await self._close_idle()

    async def _close_idle(self) -> None:
        """Close the least recently used circuits' pools beyond :data:`MOST_IDLE_CIRCUITS`,
        the idle ones only: a response or a session's WebSocket still reading keeps its own."""
        excess = len(self._circuits) - MOST_IDLE_CIRCUITS
        for name, circuit in list(self._circuits.items()):
            if excess <= 0:
                break
            if circuit.requests == 0 and not circuit.transport.in_use():
                del self._circuits[name]
                excess -= 1
                await circuit.transport.aclose()

    async def aclose(self) -> None:
        circuits, self._circuits = list(self._circuits.values()), {}
        for circuit in circuits:
            await circuit.transport.aclose()
