"""One instance's Tor requests (``api.tor``), checked and answered for the broker.

Every request is hostile until parsed: fingerprints, lengths, ports and keys are checked
here, limits come from the manifest and the node policy, and an instance can only name
circuits and onion services it made itself (others' ids read as unknown).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import socket
from dataclasses import dataclass
from typing import Any

from bento.errors import BentoError
from bento.protocol.policy import Needs, NodePolicy
from bento.server.tor_books import Owner, TorDenied
from bento.server.tor_for_functions import TorForFunctions
from bento.tor import onion
from bento.tor.consensus import MAX_PATH

PAGE = 64  # relays per reply: a reply must stay well under the runtime's 64 KiB read
MAX_WAIT = 120.0
__all__ = ["InstanceTor", "TorDenied"]


@dataclass
class InstanceTor:
    """The Tor face of one instance; made by the registry, closed when the instance ends."""

    service: TorForFunctions
    owner: Owner
    max_circuits: int
    max_onions: int
    call_boxes: bool = False
    circuits_built: int = 0
    onions_published: int = 0
    building: int = 0  # circuits asked for and not yet recorded: the broker answers requests at once

    @classmethod
    def open(
        cls, service: TorForFunctions, function_id: str, needs: Needs, policy: NodePolicy
    ) -> InstanceTor:
        circuits = min(needs.tor_circuits, policy.tor.max_circuits) if policy.tor.circuits else 0
        onions = min(needs.onion_services, policy.tor.max_onion_services) if policy.tor.onion_services else 0
        calls = needs.call_boxes and policy.tor.call_boxes
        return cls(service, service.enter(function_id), circuits, onions, calls)

    async def close(self) -> None:
        await self.service.leave(self.owner)

    def listening(self, sock: socket.socket) -> None:
        if self.max_onions:
            self.service.keep_listener(self.owner.function_id, sock)

    async def handle(self, op: str, request: dict[str, Any]) -> tuple[dict[str, Any], socket.socket | None]:
        """Answer one ``tor.*`` request; BentoError (a failure) or TorDenied (refused)."""
        if op in ("tor.relays", "tor.exit_allows", "tor.circuit", "tor.circuits") and not self.max_circuits:
            raise TorDenied("circuits are not in this function's manifest (needs.tor_circuits)")
        if op == "tor.boxes":
            if not (self.call_boxes or self.max_circuits):
                raise TorDenied("calling other boxes is not in this function's manifest (needs.call_boxes)")
            return {"boxes": (await self.service.directory()).bento_boxes()}, None
        if op == "tor.relays":
            return await self._relays(request), None
        if op == "tor.exit_allows":
            directory = await self.service.directory()
            host, port = _host(request.get("host")), _port(request.get("port"))
            return {"allowed": directory.exit_allows(str(request.get("fingerprint")), host, port)}, None
        if op == "tor.circuit":
            return await self._circuit(request), None
        if op == "tor.circuits":
            mine = [self.service.circuits[c].as_json() for c in sorted(self.owner.circuits)]
            return {"circuits": mine}, None
        if op == "tor.wait":
            return await self._wait(request), None
        if op == "tor.close":
            await self.service.close_circuit(self.owner, self._mine(request).id)
            return {}, None
        if op == "tor.events":
            return await self._events(request), None
        if op == "tor.stream":
            return await self._stream(request)
        if op == "tor.publish":
            return await self._publish(request), None
        if op == "tor.unpublish":
            if not self.max_onions:
                raise TorDenied("onion services are not in this function's manifest (needs.onion_services)")
            await self.service.remove(self.owner, str(request.get("address", "")))
            return {}, None
        raise TorDenied(f"unknown Tor request {op!r}")

    # --- the consensus ------------------------------------------------------------------

    async def _relays(self, request: dict[str, Any]) -> dict[str, Any]:
        directory = await self.service.directory()
        flags = request.get("flags") or []
        if not isinstance(flags, list) or not all(isinstance(f, str) and len(f) < 32 for f in flags):
            raise TorDenied("flags must be a list of flag names such as ['Exit', 'Fast']")
        exit_to = _target(request.get("exit_to"))
        offset = request.get("offset", 0)
        if not isinstance(offset, int) or offset < 0:
            raise TorDenied("offset must be a non-negative integer")
        found = directory.select(flags=flags, exit_to=exit_to)
        return {"relays": [r.as_json() for r in found[offset : offset + PAGE]], "total": len(found)}

    # --- circuits -----------------------------------------------------------------------

    async def _circuit(self, request: dict[str, Any]) -> dict[str, Any]:
        held = len(self.owner.circuits) + self.building
        if held >= self.max_circuits:
            raise TorDenied(
                f"this instance already has {held} circuits, its limit "
                f"(needs.tor_circuits, at most the box's tor.max_circuits); close one first"
            )
        self.building += 1  # counted from the check on, so requests answered at once cannot pass it together
        try:
            return await self._build(request)
        finally:
            self.building -= 1

    async def _build(self, request: dict[str, Any]) -> dict[str, Any]:
        directory = await self.service.directory()
        path = request.get("path")
        if path is not None:
            if not isinstance(path, list) or not 1 <= len(path) <= MAX_PATH:
                raise TorDenied(f"path must be a list of 1 to {MAX_PATH} relay fingerprints")
            relays = [directory.get(str(name)) for name in path]
            if len({r.fingerprint for r in relays}) != len(relays):
                raise BentoError("a relay appears twice in the path")
        else:
            length = request.get("length", 3)
            exclude = request.get("exclude") or []
            if not isinstance(length, int) or not isinstance(exclude, list):
                raise TorDenied("length must be an integer and exclude a list of fingerprints")
            relays = directory.path(length, exit_to=_target(request.get("exit_to")), exclude=exclude)
        circuit = await self.service.build(self.owner, [r.fingerprint for r in relays])
        self.circuits_built += 1
        return circuit.as_json()

    def _mine(self, request: dict[str, Any]) -> Any:
        circuit_id = str(request.get("circuit", ""))
        if circuit_id not in self.owner.circuits or circuit_id not in self.service.circuits:
            raise TorDenied(f"no circuit {circuit_id[:20]!r} of this instance (closed, or not yours)")
        return self.service.circuits[circuit_id]

    async def _wait(self, request: dict[str, Any]) -> dict[str, Any]:
        circuit = self._mine(request)
        timeout = _timeout(request.get("timeout"))
        if circuit.state == "building":
            try:
                async with asyncio.timeout(timeout):
                    await circuit.settled.wait()
            except TimeoutError:
                pass
        return dict(circuit.as_json())

    async def _events(self, request: dict[str, Any]) -> dict[str, Any]:
        owner = self.owner
        if not owner.events:
            owner.news.clear()
            try:
                async with asyncio.timeout(_timeout(request.get("timeout"))):
                    await owner.news.wait()
            except TimeoutError:
                pass
        events = list(owner.events)
        owner.events.clear()
        return {"events": events}

    async def _stream(self, request: dict[str, Any]) -> tuple[dict[str, Any], socket.socket]:
        host, port = _host(request.get("host")), _port(request.get("port"))
        if host.endswith(".onion"):
            if not (self.max_circuits or self.call_boxes):
                raise TorDenied("circuits are not in this function's manifest (needs.tor_circuits)")
            onion.public_key_of(host)  # BentoError unless a valid v3 address
            if not self.max_circuits:  # then only Bento boxes (needs.call_boxes)
                boxes = (await self.service.directory()).boxes.values()
                if host.removesuffix(".onion") not in boxes:
                    raise TorDenied(f"{host[:70]} is not a Bento box in the consensus (needs.call_boxes)")
            sock = await self.service.open_stream(self.owner, "0", host, port)
            return {"peer": [host, port]}, sock
        if not self.max_circuits:
            raise TorDenied("circuits are not in this function's manifest (needs.tor_circuits)")
        circuit = self._mine(request)
        if circuit.state == "building":
            async with asyncio.timeout(MAX_WAIT):
                await circuit.settled.wait()
        if circuit.state != "built":
            raise BentoError(f"circuit {circuit.id} is {circuit.state} ({circuit.reason}); build another")
        directory = await self.service.directory()
        if not directory.exit_allows(circuit.path[-1], host, port):
            raise TorDenied(f"the circuit's exit ({circuit.path[-1]}) does not allow {host}:{port}")
        sock = await self.service.open_stream(self.owner, circuit.id, host, port)
        return {"peer": [host, port], "circuit": circuit.id}, sock

    # --- onion services -----------------------------------------------------------------

    async def _publish(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.max_onions:
            raise TorDenied("onion services are not in this function's manifest (needs.onion_services)")
        if self.onions_published >= self.max_onions:
            raise TorDenied(f"this instance has published {self.onions_published} onion services, its limit")
        self.onions_published += 1  # counted from the check on (requests are answered at once)
        try:
            return await self._publish_checked(request)
        except BaseException:
            self.onions_published -= 1
            raise

    async def _publish_checked(self, request: dict[str, Any]) -> dict[str, Any]:
        port, virtual_port = _port(request.get("port")), _port(request.get("virtual_port", 80))
        key = request.get("key")
        blob = None
        if key is not None:
            try:
                seed = base64.b64decode(str(key), validate=True)
            except (binascii.Error, ValueError):
                raise TorDenied("key must be the base64 of a 32-byte Ed25519 seed") from None
            if len(seed) != 32:
                raise TorDenied("key must be the base64 of a 32-byte Ed25519 seed")
            blob = onion.tor_key_blob(seed)
        client_auth = request.get("client_auth")
        if client_auth is not None and not _is_x25519_base32(client_auth):
            raise TorDenied("client_auth must be a base32 X25519 public key (52 characters)")
        address = await self.service.publish(
            self.owner, port, virtual_port, blob, client_auth, bool(request.get("wait", True))
        )
        return {"address": address}


def _host(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 253 or any(c in value for c in ' \t\r\n\0"'):
        raise TorDenied("host must be a host name or address")
    return value.lower()


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise TorDenied(f"{value!r} is not a port (1 to 65535)")
    return value


def _target(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise TorDenied("exit_to must be [host, port]")
    return _host(value[0]), _port(value[1])


def _timeout(value: Any) -> float:
    if value is None:
        return MAX_WAIT
    if not isinstance(value, int | float) or value < 0:
        raise TorDenied("timeout must be a non-negative number of seconds")
    return min(float(value), MAX_WAIT)


def _is_x25519_base32(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 52:
        return False
    try:
        return len(base64.b32decode(value.upper() + "====")) == 32
    except (binascii.Error, ValueError):
        return False
