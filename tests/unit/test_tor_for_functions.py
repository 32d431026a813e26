"""Tor for functions without a tor: the consensus model, path choice, the torrc, and
every refusal an instance's request can meet before tor is asked anything."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from stem.exit_policy import ExitPolicy

from bento.errors import BentoError
from bento.protocol.policy import Needs, NodePolicy, TorPolicy, violations
from bento.server.function_tor import InstanceTor, TorDenied
from bento.server.tor_books import Circuit
from bento.server.tor_for_functions import TorForFunctions
from bento.tor.client_tor import relay_directory_lines, render_torrc
from bento.tor.consensus import Directory, Relay
from bento.tor.onion import onion_address

RUNNING = ("Fast", "Running", "Valid")


def _relay(n: int, *flags: str, bandwidth: int = 100) -> Relay:
    return Relay(f"{n:040X}", f"r{n}", (*RUNNING, *flags), bandwidth, f"10.0.0.{n}", 9001)


def _directory() -> Directory:
    relays = [_relay(1, "Guard"), _relay(2, "Guard"), _relay(3), _relay(4, "Exit"), _relay(5, "Exit")]
    relays.append(Relay(f"{6:040X}", "down", ("Valid",), 100, "10.0.0.6", 9001))
    policies = {
        relays[3].fingerprint: ExitPolicy("accept 127.0.0.0/8:80", "reject *:*"),
        relays[4].fingerprint: ExitPolicy("accept *:443", "reject *:*"),
    }
    return Directory(relays, policies)


def test_the_consensus_answers_what_functions_ask() -> None:
    d = _directory()
    assert d.get("$" + f"{4:040x}").nickname == "r4"
    assert d.exit_allows(f"{4:040X}", "127.0.0.1", 80)
    assert not d.exit_allows(f"{4:040X}", "127.0.0.1", 81)
    assert d.exit_allows(f"{5:040X}", "example.invalid", 443)  # a name: decided at the exit
    assert not d.exit_allows(f"{1:040X}", "127.0.0.1", 80)  # no descriptor policy: no exit
    assert [r.nickname for r in d.select(flags=["Exit"])] == ["r4", "r5"]
    assert [r.nickname for r in d.select(exit_to=("127.0.0.2", 80))] == ["r4"]
    with pytest.raises(BentoError, match="no relay"):
        d.get("F" * 40)
    with pytest.raises(BentoError, match="not running"):
        d.get(f"{6:040X}")
    with pytest.raises(BentoError, match="not a relay fingerprint"):
        d.get("r4")


def test_paths_end_at_an_allowed_exit_and_start_at_a_guard() -> None:
    d = _directory()
    rng = random.Random(7)
    for _ in range(50):
        path = d.path(3, exit_to=("127.0.0.1", 80), rng=rng)
        assert path[-1].nickname == "r4" and "Guard" in path[0].flags
        assert len({r.fingerprint for r in path}) == 3
    assert all(r.nickname != "r1" for r in d.path(4, exclude=[f"{1:040X}"], rng=rng))
    with pytest.raises(BentoError, match="1 to 8 hops"):
        d.path(9)
    with pytest.raises(BentoError, match="too few relays"):
        d.path(6)
    with pytest.raises(BentoError, match="no running relay's exit policy allows"):
        d.path(3, exit_to=("127.0.0.1", 22))


def test_the_functions_tor_is_client_only_and_follows_the_relays_directory(tmp_path: Path) -> None:
    class Relay:  # what relay_directory_lines asks of a Stem controller
        def get_conf(self, option: str, default: Any, multiple: bool = False) -> list[str]:
            return {"DirAuthority": ["auth0 orport=1 127.0.0.1:2 AB"], "TestingTorNetwork": ["1"]}.get(
                option, []
            )

    lines = relay_directory_lines(Relay())  # type: ignore[arg-type]
    assert lines == ["DirAuthority auth0 orport=1 127.0.0.1:2 AB", "TestingTorNetwork 1"]
    torrc = render_torrc(tmp_path, 1234, lines)
    isolation = ("ClientOnly 1", "__LeaveStreamsUnattached 1", "__DisablePredictedCircuits 1")
    fixed_build_timeout = ("LearnCircuitBuildTimeout 0", "CircuitBuildTimeout 60")
    for option in (*isolation, *fixed_build_timeout):
        assert option in torrc
    assert "__OwningControllerProcess 1234" in torrc and "ORPort" not in torrc
    assert torrc.endswith("TestingTorNetwork 1\n")


def test_manifest_counts_fit_the_policy() -> None:
    policy = NodePolicy(tor=TorPolicy(circuits=True, max_circuits=4, onion_services=False))
    assert Needs.model_validate({"tor_circuits": True}).tor_circuits == 1  # old manifests
    assert violations(Needs(tor_circuits=4), policy) == []
    assert violations(Needs(tor_circuits=5), policy) == ["tor_circuits: asks for 5, the box allows at most 4"]
    assert violations(Needs(onion_services=1), policy) == ["onion_services: the box allows no onion services"]


async def _refusal(tor: InstanceTor, op: str, **request: Any) -> str:
    with pytest.raises(TorDenied) as caught:
        await tor.handle(op, {"op": op, **request})
    return str(caught.value)


async def test_requests_are_refused_before_tor_is_asked(tmp_path: Path) -> None:
    service = TorForFunctions(tmp_path)  # never started: nothing below may need tor
    policy = NodePolicy(tor=TorPolicy(circuits=True, onion_services=True, max_onion_services=1))
    none = InstanceTor.open(service, "f0", Needs(), policy)
    assert "needs.tor_circuits" in await _refusal(none, "tor.circuit", length=3)
    assert "needs.tor_circuits" in await _refusal(none, "tor.relays")
    assert "needs.onion_services" in await _refusal(none, "tor.publish", port=8080)

    tor = InstanceTor.open(service, "f1", Needs(tor_circuits=2, onion_services=3), policy)
    assert (tor.max_circuits, tor.max_onions) == (2, 1)  # the policy caps the manifest
    assert "no circuit '7' of this instance" in await _refusal(tor, "tor.wait", circuit="7")
    assert "no circuit" in await _refusal(tor, "tor.close", circuit=["7"])
    assert "unknown Tor request" in await _refusal(tor, "tor.getinfo")
    assert "not a port" in await _refusal(tor, "tor.stream", circuit="1", host="x", port=0)
    assert "host must be" in await _refusal(tor, "tor.stream", circuit="1", host="a b", port=80)
    assert "32-byte Ed25519 seed" in await _refusal(tor, "tor.publish", port=80, key="c2hvcnQ=")
    assert "32-byte Ed25519 seed" in await _refusal(tor, "tor.publish", port=80, key="!!")
    assert "X25519" in await _refusal(tor, "tor.publish", port=80, client_auth="A" * 51)
    assert "not a listener of this function" in await _refusal(tor, "tor.publish", port=8080)
    assert "not an onion service of this function" in await _refusal(tor, "tor.unpublish", address="x")

    # The last instance of f1 ends: its listeners are let go, nothing of it is left.
    listener = __import__("socket").create_server(("127.0.0.1", 0))
    tor.listening(listener)
    kept = service.functions["f1"].listeners
    assert list(kept) == [listener.getsockname()[1]]
    copy = next(iter(kept.values()))
    await tor.close()
    await none.close()
    assert copy.fileno() == -1 and service.functions == {} and service.owners == {}
    listener.close()


async def test_without_its_tor_a_box_says_so(tmp_path: Path) -> None:
    service = TorForFunctions(tmp_path)
    service.failure = "tor did not start"
    tor = InstanceTor.open(service, "f", Needs(tor_circuits=1), NodePolicy(tor=TorPolicy(circuits=True)))
    with pytest.raises(BentoError, match="not available: tor did not start"):
        await asyncio.wait_for(tor.handle("tor.relays", {}), 5)


def test_boxes_are_the_relays_that_advertise_one() -> None:
    onion = "b" * 56
    relays = [_relay(1), Relay(f"{2:040X}", "gone", ("Valid",), 1, "10.0.0.2", 9001)]
    d = Directory(relays, {}, {f"{1:040X}": onion, f"{2:040X}": "c" * 56})
    assert d.bento_boxes() == [
        {
            "nickname": "r1",
            "fingerprint": f"{1:040X}",
            "flags": list(RUNNING),
            "onion": onion,
            "address": "10.0.0.1:9001",
        }
    ]


async def test_calling_boxes_needs_the_manifest_and_the_policy(tmp_path: Path) -> None:
    service = TorForFunctions(tmp_path)
    closed = NodePolicy(tor=TorPolicy(circuits=True))
    assert violations(Needs(call_boxes=True), closed) == [
        "call_boxes: the box allows no calls to other boxes"
    ]
    open_ = NodePolicy(tor=TorPolicy(call_boxes=True))
    assert violations(Needs(call_boxes=True), open_) == []
    without = InstanceTor.open(service, "f", Needs(), open_)
    assert "needs.call_boxes" in await _refusal(without, "tor.boxes")
    somewhere = onion_address(bytes(32)) + ".onion"
    assert "needs.tor_circuits" in await _refusal(without, "tor.stream", host=somewhere, port=80)
    caller = InstanceTor.open(service, "g", Needs(call_boxes=True), open_)
    assert caller.call_boxes and not caller.max_circuits
    assert "needs.tor_circuits" in await _refusal(caller, "tor.circuit", length=3)
    assert "not a port" in await _refusal(caller, "tor.stream", host=somewhere, port=99999)


class _SlowTor(TorForFunctions):
    """A functions' tor whose directory answers only when the test says so (no tor process)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.answer = asyncio.Event()

    async def directory(self) -> Directory:
        await self.answer.wait()
        return _directory()

    async def build(self, owner: Any, path: list[str]) -> Any:
        circuit = Circuit(id=str(len(self.circuits) + 1), owner=owner.tag, path=path)
        self.circuits[circuit.id] = circuit
        owner.circuits.add(circuit.id)
        return circuit


async def test_circuits_asked_for_at_once_keep_to_the_limit(tmp_path: Path) -> None:
    """The broker answers an instance's requests concurrently: two circuits asked for
    while the first is still being chosen must not both pass a limit of one."""
    service = _SlowTor(tmp_path)
    tor = InstanceTor.open(service, "f", Needs(tor_circuits=1), NodePolicy(tor=TorPolicy(circuits=True)))
    first = asyncio.create_task(tor.handle("tor.circuit", {"length": 2}))
    second = asyncio.create_task(tor.handle("tor.circuit", {"length": 2}))
    await asyncio.sleep(0)  # one turn of the loop: each request runs to its first wait
    service.answer.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    built = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, TorDenied)]
    assert len(built) == 1 and len(refused) == 1, results
    assert "already has 1 circuits, its limit" in str(refused[0])
    assert len(tor.owner.circuits) == 1 and tor.building == 0
    await tor.close()
