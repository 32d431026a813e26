"""Tor for functions on the testnet: circuits, streams, onion services, isolation, bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import stem.control
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from python_socks.sync import Proxy
from support import TIMEOUT, drain

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.protocol import onion
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs, SyscallProfile
from bento.testnet import Node, Testnet
from bento.testnet.state import Role
from bento.tor import control

pytestmark = pytest.mark.timeout(600)

CIRCUITS = """
from bento.runtime import api

def fetch(port, path=None):
    relays = api.tor.relays(flags=["Running"])
    exits = api.tor.relays(flags=["Exit"], exit_to=("127.0.0.1", port))
    if path is None:
        circuit = api.tor.circuit(length=3, exit_to=("127.0.0.1", port))
    else:
        circuit = api.tor.circuit(path)
    circuit.wait(timeout=60)
    with circuit.connect("127.0.0.1", port, timeout=60) as sock:
        sock.sendall(b"ping")
        answer = sock.recv(100).decode()
    try:  # a name the exit cannot resolve: tor gives the stream up, and says why
        circuit.connect("nowhere.invalid", port, timeout=50).close()
        unresolved = "connected"
    except api.tor.TorError as exc:
        unresolved = str(exc)
    mine = [c.id for c in api.tor.circuits()]
    events = api.tor.events()
    circuit.close()
    return {
        "relays": len(relays), "exits": sorted(r.fingerprint for r in exits), "path": circuit.path,
        "answer": answer, "mine": mine, "id": circuit.id, "events": [e["state"] for e in events],
        "built_seconds": circuit.built_seconds, "unresolved": unresolved,
    }

def refusals(port):
    out = {}
    def attempt(name, call):
        try:
            call()
            out[name] = "allowed"
        except PermissionError as exc:
            out[name] = "denied: " + str(exc)
        except OSError as exc:
            out[name] = type(exc).__name__ + ": " + str(exc)
    attempt("unknown relay", lambda: api.tor.circuit(["$" + "AB" * 20]))
    attempt("not a fingerprint", lambda: api.tor.circuit(["exit0"]))
    attempt("too long", lambda: api.tor.circuit(length=50))
    first = api.tor.circuit(length=2)
    attempt("over the limit", lambda: api.tor.circuit(length=2))
    attempt("foreign circuit", lambda: api.tor._ask({"op": "tor.close", "circuit": str(int(first.id) - 1)}))
    attempt("unowned port", lambda: api.tor.publish(port))
    attempt("bad key", lambda: api.tor.publish(api.listen(), key=b"short"))
    return out

def hold():
    circuit = api.tor.circuit(length=2).wait(timeout=60)
    api.send(circuit.id + "\\n")
    api.recv()  # until the test says stop
    return circuit.id

def poke(circuit_id):
    try:
        api.tor._ask({"op": "tor.wait", "circuit": circuit_id, "timeout": 0})
    except PermissionError as exc:
        return str(exc)
    return "it answered"

def serve():
    listener = api.listen()
    service = api.tor.publish(listener, virtual_port=80)
    api.send(service.address + "\\n")
    listener.settimeout(120)
    peer, _ = listener.accept()
    with peer:
        data = peer.recv(100)
        peer.sendall(data.upper())
    return service.address
"""

KEYED = """
from bento.runtime import api

def keyed(seed_hex, client_auth):
    listener = api.listen()
    service = api.tor.publish(listener, key=bytes.fromhex(seed_hex), client_auth=client_auth)
    return service.address
"""

NO_TOR = """
from bento.runtime import api

def main():
    try:
        api.tor.circuit(length=3)
    except PermissionError as exc:
        return str(exc)
    return "built"
"""


def _manifest(name: str, circuits: int, onions: int) -> Manifest:
    needs = Needs(
        tor_circuits=circuits,
        onion_services=onions,
        listen=True,
        syscall_profiles=[SyscallProfile.COMPUTE, SyscallProfile.NETWORK],
    )
    return Manifest(name=name, needs=needs)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on loopback that answers ``pong:<what it got>`` (the exits allow 127.0.0.1)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(1.0)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                peer, _ = server.accept()
            except TimeoutError:
                continue
            with peer:
                peer.settimeout(30)
                peer.sendall(b"pong:" + peer.recv(100))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def _function_tor(node: Node) -> stem.control.Controller:
    """A controller on the box's own function tor (for checking, as the operator could)."""
    assert node.bento_dir is not None
    port_file = Path(node.bento_dir) / "function-tor" / "control-port"
    return control.connect(port_file.read_text().strip().removeprefix("PORT="))


async def _call(box: Box, deployment: Deployment, entry: str, *args: object) -> object:
    session = await box.invoke(deployment, entry, list(args))
    _, ended = await drain(box, deployment, session)
    assert ended.error is None, ended.error
    return ended.result


async def test_a_function_builds_a_circuit_and_streams_over_exactly_it(
    testnet: Testnet, box: Box, box_node: Node, echo_port: int
) -> None:
    deployment = await box.deploy(CIRCUITS.encode(), _manifest("circuits", 2, 1))
    async with asyncio.timeout(TIMEOUT):
        chosen = await _call(box, deployment, "fetch", echo_port)
    assert isinstance(chosen, dict)
    assert chosen["answer"] == "pong:ping"
    assert len(chosen["path"]) == 3 and chosen["path"][-1] in chosen["exits"]
    assert chosen["relays"] >= 8 and chosen["mine"] == [chosen["id"]]
    assert "built" in chosen["events"]
    # The exit answered RESOLVEFAILED: tor detached the stream (or, after its third failure
    # for that name, closed it) and the function heard why, not a timeout after its 50 s.
    assert "tor reported it" in chosen["unresolved"] and "RESOLVEFAILED" in chosen["unresolved"], chosen

    # A path of the function's choosing, ending at the box's own relay (an exit).
    exit_fp = box_node.fingerprint
    assert exit_fp is not None and exit_fp in chosen["exits"]
    middle = next(n.fingerprint for n in testnet.relays() if n.role is Role.RELAY)
    async with asyncio.timeout(TIMEOUT):
        fixed = await _call(box, deployment, "fetch", echo_port, [middle, exit_fp])
    assert isinstance(fixed, dict)
    assert fixed["path"] == [middle, exit_fp] and fixed["answer"] == "pong:ping"
    # The session has ended: its circuits are gone from the box's function tor.
    with _function_tor(box_node) as ctl:
        assert fixed["id"] not in {c.id for c in ctl.get_circuits()}
    info = await box.sessions(deployment)
    assert max(s.usage.circuits for s in info.sessions) == 1
    await box.shutdown(deployment)


async def test_bad_tor_requests_get_clear_refusals(box: Box) -> None:
    deployment = await box.deploy(CIRCUITS.encode(), _manifest("refusals", 1, 1))
    async with asyncio.timeout(TIMEOUT):
        out = await _call(box, deployment, "refusals", 1)
    assert isinstance(out, dict), out
    assert "no relay $ABABAB" in out["unknown relay"] and "TorError" in out["unknown relay"]
    assert "not a relay fingerprint" in out["not a fingerprint"]
    assert "1 to 8 hops" in out["too long"]
    assert out["over the limit"].startswith("denied: ") and "limit" in out["over the limit"]
    assert out["foreign circuit"].startswith("denied: ") and "no circuit" in out["foreign circuit"]
    assert out["unowned port"].startswith("denied: ")
    assert "port 1 is not a listener of this function" in out["unowned port"]
    assert "32-byte Ed25519 seed" in out["bad key"]

    plain = await box.deploy(NO_TOR.encode(), Manifest(name="no-tor"))
    async with asyncio.timeout(TIMEOUT):
        refused = await _call(box, plain, "main")
    assert "offers no Tor for functions, or the manifest asks for none" in str(refused)
    await box.shutdown(deployment)
    await box.shutdown(plain)


async def test_functions_never_see_each_others_circuits(box: Box) -> None:
    holder = await box.deploy(CIRCUITS.encode(), _manifest("holder", 1, 0))
    other = await box.deploy(CIRCUITS.encode(), _manifest("other", 1, 0))
    session = await box.invoke(holder, "hold", [])
    async with asyncio.timeout(TIMEOUT), await box.attach(holder, session) as stream:
        circuit_id = (await anext(aiter(stream))).decode().strip()
        answer = await _call(box, other, "poke", circuit_id)
        assert f"no circuit '{circuit_id}' of this instance" in str(answer)
        await stream.close_input()
        async for _ in stream:
            pass
    assert stream.ended is not None and stream.ended.result == circuit_id
    await box.shutdown(holder)
    await box.shutdown(other)


async def test_a_function_publishes_an_onion_service_that_goes_with_it(
    testnet: Testnet, box: Box, box_node: Node
) -> None:
    deployment = await box.deploy(CIRCUITS.encode(), _manifest("onion", 0, 1))
    session = await box.invoke(deployment, "serve", [])
    host, port = control.parse_address(testnet.socks_address)
    async with asyncio.timeout(TIMEOUT), await box.attach(deployment, session) as stream:
        address = (await anext(aiter(stream))).decode().strip()
        with _function_tor(box_node) as ctl:
            assert address in ctl.get_info("onions/detached").split()

        def visit() -> bytes:
            with Proxy.from_url(f"socks5://{host}:{port}", rdns=True).connect(
                f"{address}.onion", 80, timeout=120
            ) as s:
                s.settimeout(120)
                s.sendall(b"hello onion")
                return s.recv(100)

        assert await asyncio.to_thread(visit) == b"HELLO ONION"
        async for _ in stream:
            pass
    assert stream.ended is not None and stream.ended.result == address
    info = await box.session(deployment, session)
    assert info.usage.onion_services == 1
    # Its last instance ended: the service is gone from the function tor.
    with _function_tor(box_node) as ctl:
        assert address not in ctl.get_info("onions/detached").split()
    await box.shutdown(deployment)
    json.dumps(info.model_dump(mode="json"))


async def test_an_onion_service_keeps_the_address_of_the_key_the_function_gives(
    box: Box, box_node: Node
) -> None:
    seed = os.urandom(32)
    client_key = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    client_auth = base64.b32encode(client_key).decode().rstrip("=")
    deployment = await box.deploy(KEYED.encode(), _manifest("keyed", 0, 1))
    async with asyncio.timeout(TIMEOUT):
        address = await _call(box, deployment, "keyed", seed.hex(), client_auth)
    assert address == onion.address_of(Ed25519PrivateKey.from_private_bytes(seed))
    with _function_tor(box_node) as ctl:  # gone with its instance
        assert address not in ctl.get_info("onions/detached").split()
    await box.shutdown(deployment)
