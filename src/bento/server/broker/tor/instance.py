"""One instance's Tor (``api.tor``): typed requests answered against its function's budgets.

Requests arrive parsed (bento.server.broker.tor.requests); what is left here is what a
model cannot know: the manifest's and the policy's permissions, the function's budgets
(bento.server.broker.budgets: circuits held and built per minute, streams, onion
services, listeners, each taken before any await), ownership (an instance names only
circuits it made; a function only its own onion services), and the gate, which a
stream's literal target passes exactly as the broker's own connect does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from bento.errors import BentoError
from bento.protocol import onion
from bento.protocol.policy import Needs, NodePolicy
from bento.server.broker.budgets import BudgetSpec, Ledger
from bento.server.broker.gate import Denied, Gatekeeper, closed_gate, normalise
from bento.server.broker.tor import requests as rq
from bento.server.broker.tor.books import Circuit, Owner, TorDenied
from bento.server.broker.tor.service import TorForFunctions
from bento.server.broker.tor.streams import STREAM_TIMEOUT
from bento.tor.consensus import MAX_PATH

PAGE = 64  # relays per reply: a reply must stay well under the runtime's 64 KiB read
_LOCAL_NAMES = ("localhost", ".localhost", ".local", ".internal", ".home.arpa")
__all__ = ["InstanceTor", "TorDenied"]


@dataclass
class InstanceTor:
    """The Tor face of one instance; made by the registry, closed when the instance ends."""

    service: TorForFunctions
    owner: Owner
    ledger: Ledger
    gate: Gatekeeper
    private_destinations: bool
    call_boxes: bool = False
    circuits_built: int = 0
    onions_published: int = 0

    @classmethod
    def open(
        cls,
        service: TorForFunctions,
        function_id: str,
        needs: Needs,
        policy: NodePolicy,
        ledger: Ledger | None = None,
        gate: Gatekeeper | None = None,
    ) -> InstanceTor:
        """The Tor of a new instance, counted against its function's ``ledger`` (by default
        one of its own), its streams' literal targets checked by ``gate`` (by default: none pass)."""
        calls = needs.call_boxes and policy.tor.call_boxes
        budgets = ledger if ledger is not None else Ledger(BudgetSpec.of(needs, policy))
        owner = service.enter(function_id, budgets)
        checks = gate if gate is not None else closed_gate()
        return cls(service, owner, budgets, checks, policy.network.private_destinations, calls)

    @property
    def max_circuits(self) -> int:
        return self.ledger.spec.circuits

    @property
    def max_onions(self) -> int:
        return self.ledger.spec.onion_services

    async def close(self) -> None:
        await self.service.leave(self.owner)

    def listening(self, sock: socket.socket) -> None:
        """The broker made a listener for this function: keep a copy an onion service may lead to."""
        if self.max_onions:
            self.service.keep_listener(self.owner.function_id, sock, self.ledger)

    def _circuits_allowed(self) -> None:
        if not self.max_circuits:
            raise TorDenied("circuits are not in this function's manifest (needs.tor_circuits)")

    # --- the consensus ------------------------------------------------------------------

    async def boxes(self, _: rq.Boxes) -> dict[str, Any]:
        if not (self.call_boxes or self.max_circuits):
            raise TorDenied("calling other boxes is not in this function's manifest (needs.call_boxes)")
        return {"boxes": (await self.service.directory(self.owner)).bento_boxes()}

    async def relays(self, request: rq.Relays) -> dict[str, Any]:
        self._circuits_allowed()
        directory = await self.service.directory(self.owner)
        exit_to = (request.exit_to[0].lower(), request.exit_to[1]) if request.exit_to else None
        found = directory.select(flags=list(request.flags), exit_to=exit_to)
        return {
            "relays": [r.as_json() for r in found[request.offset : request.offset + PAGE]],
            "total": len(found),
        }

    async def exit_allows(self, request: rq.ExitAllows) -> dict[str, Any]:
        self._circuits_allowed()
        directory = await self.service.directory(self.owner)
        return {"allowed": directory.exit_allows(request.fingerprint, request.host.lower(), request.port)}

    # --- circuits -----------------------------------------------------------------------

    async def circuit(self, request: rq.BuildCircuit) -> dict[str, Any]:
        self._circuits_allowed()
        held = self.ledger.take("circuits")  # before any await: requests are answered at once
        try:
            directory = await self.service.directory(self.owner)
            if request.path is not None:
                if not 1 <= len(request.path) <= MAX_PATH:
                    raise TorDenied(f"path must be a list of 1 to {MAX_PATH} relay fingerprints")
                relays = [directory.get(name) for name in request.path]
                if len({r.fingerprint for r in relays}) != len(relays):
                    raise BentoError("a relay appears twice in the path")
            else:
                exit_to = (request.exit_to[0].lower(), request.exit_to[1]) if request.exit_to else None
                relays = directory.path(request.length, exit_to=exit_to, exclude=list(request.exclude))
            self.ledger.build_circuit()  # the rate counts what reaches tor, checked just before it does
            circuit = await self.service.build(self.owner, [r.fingerprint for r in relays], held)
        except BaseException:
            held.release()
            raise
        self.circuits_built += 1
        return circuit.as_json()

    def _mine(self, circuit_id: str) -> Circuit:
        if circuit_id not in self.owner.circuits or circuit_id not in self.service.circuits:
            raise TorDenied(f"no circuit {circuit_id!r} of this instance (closed, or not yours)")
        return self.service.circuits[circuit_id]

    async def circuits(self, _: rq.Circuits) -> dict[str, Any]:
        return {"circuits": [self.service.circuits[c].as_json() for c in sorted(self.owner.circuits)]}

    async def wait(self, request: rq.Wait) -> dict[str, Any]:
        circuit = self._mine(request.circuit)
        if circuit.state == "building":
            try:
                async with asyncio.timeout(rq.bounded(request.timeout)):
                    await circuit.settled.wait()
            except TimeoutError:
                pass
        return dict(circuit.as_json())

    async def close_circuit(self, request: rq.Close) -> dict[str, Any]:
        await self.service.close_circuit(self.owner, self._mine(request.circuit).id)
        return {}

    async def events(self, request: rq.Events) -> dict[str, Any]:
        owner = self.owner
        if not owner.events:
            owner.news.clear()
            try:
                async with asyncio.timeout(rq.bounded(request.timeout)):
                    await owner.news.wait()
            except TimeoutError:
                pass
        events = list(owner.events)
        owner.events.clear()
        return {"events": events}

    # --- streams ------------------------------------------------------------------------

    async def stream(self, request: rq.Stream) -> tuple[dict[str, Any], socket.socket]:
        host, port = request.host.lower(), request.port
        if host.endswith(".onion"):
            return await self._onion_stream(host, port, _within(request))
        self._circuits_allowed()
        self._pass_gate(host, port)
        if request.circuit is None:
            raise TorDenied("a stream to an address that is not an onion service names one of your circuits")
        circuit = self._mine(request.circuit)
        held = self.ledger.take("streams")  # before any await; the service keeps it while tor does
        try:
            if circuit.state == "building":
                async with asyncio.timeout(rq.MAX_WAIT):
                    await circuit.settled.wait()
            if circuit.state != "built":
                raise BentoError(f"circuit {circuit.id} is {circuit.state} ({circuit.reason}); build another")
            directory = await self.service.directory(self.owner)
            if not directory.exit_allows(circuit.path[-1], host, port):
                raise TorDenied(f"the circuit's exit ({circuit.path[-1]}) does not allow {host}:{port}")
            sock = await self.service.open_stream(self.owner, circuit.id, host, port, held, _within(request))
        except BaseException:
            held.release()
            raise
        return {"peer": [host, port], "circuit": circuit.id}, sock

    async def _onion_stream(
        self, host: str, port: int, within: float
    ) -> tuple[dict[str, Any], socket.socket]:
        if not (self.max_circuits or self.call_boxes):
            raise TorDenied("circuits are not in this function's manifest (needs.tor_circuits)")
        onion.public_key_of(host)  # BentoError unless a valid v3 address
        if not self.max_circuits:  # then only Bento boxes (needs.call_boxes)
            boxes = (await self.service.directory(self.owner)).boxes.values()
            if host.removesuffix(".onion") not in boxes:
                raise TorDenied(f"{host[:70]} is not a Bento box in the consensus (needs.call_boxes)")
        held = self.ledger.take("streams")
        try:
            sock = await self.service.open_stream(self.owner, "0", host, port, held, within)
        except BaseException:
            held.release()
            raise
        return {"peer": [host, port]}, sock

    def _pass_gate(self, host: str, port: int) -> None:
        """The broker's gate for a stream's target: an address literal is checked as a connect
        would be (this box's own services, non-global ranges unless the policy allows them);
        a name is resolved at the exit, so only names that always mean a local host are refused."""
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if not self.private_destinations and (host == "localhost" or host.endswith(_LOCAL_NAMES)):
                raise Denied(f"{host} names a local host, which functions may not reach") from None
            return
        address = normalise(host.strip("[]"))
        self.gate.check(address, port, private=self.private_destinations, exit_policy=False)

    # --- onion services -----------------------------------------------------------------

    async def publish(self, request: rq.Publish) -> dict[str, Any]:
        if not self.max_onions:
            raise TorDenied("onion services are not in this function's manifest (needs.onion_services)")
        blob = None
        if request.key is not None:
            try:
                seed = base64.b64decode(request.key, validate=True)
            except (binascii.Error, ValueError):
                raise TorDenied("key must be the base64 of a 32-byte Ed25519 seed") from None
            if len(seed) != 32:
                raise TorDenied("key must be the base64 of a 32-byte Ed25519 seed")
            blob = onion.tor_key_blob(seed)
        held = self.ledger.take("onion_services")  # per function, before any await
        try:
            address = await self.service.publish(
                self.owner, request.port, request.virtual_port, blob, request.client_auth, request.wait, held
            )
        except BaseException:
            held.release()
            raise
        self.onions_published += 1
        return {"address": address}

    async def unpublish(self, request: rq.Unpublish) -> dict[str, Any]:
        if not self.max_onions:
            raise TorDenied("onion services are not in this function's manifest (needs.onion_services)")
        await self.service.remove(self.owner, request.address)
        return {}


def _within(request: rq.Stream) -> float:
    """The seconds a stream may take to connect: the function's timeout, at most the broker's."""
    return STREAM_TIMEOUT if request.timeout is None else min(request.timeout, STREAM_TIMEOUT)
