"""Tor for functions without a tor: the consensus model, path choice, the torrc, and
every refusal an instance's request can meet before tor is asked anything."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import stem
from stem.exit_policy import ExitPolicy

from bento.errors import BentoError
from bento.protocol.onion import onion_address
from bento.protocol.policy import Needs, NodePolicy, TorPolicy, violations
from bento.server.broker import Context, Gatekeeper, closed_gate
from bento.server.broker.service import Broker
from bento.server.broker.tor.books import Circuit
from bento.server.broker.tor.instance import InstanceTor
from bento.server.broker.tor.requests import Relays
from bento.server.broker.tor.service import TorForFunctions
from bento.tor.client_tor import relay_directory_lines, render_torrc
from bento.tor.consensus import Directory, Relay

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


def _context(tor: InstanceTor) -> Context:
    return Context(Needs(), NodePolicy(), closed_gate(), _no_resolver, tor=tor, budgets=tor.ledger)


async def _no_resolver(host: str) -> list[str]:
    raise AssertionError("Tor requests resolve nothing on the box")


async def _ask(tor: InstanceTor, op: str, **request: Any) -> dict[str, Any]:
    """One request through the broker's real parser and table, as a function sends it."""
    reply, sock = await Broker(_context(tor)).answer(json.dumps({"op": op, **request}).encode())
    if sock is not None:
        sock.close()
    return dict(json.loads(reply))


async def _refusal(tor: InstanceTor, op: str, **request: Any) -> str:
    reply = await _ask(tor, op, **request)
    assert reply["ok"] is False and reply["denied"] is True, reply
    return str(reply["error"])


async def test_requests_are_refused_before_tor_is_asked(tmp_path: Path) -> None:
    service = TorForFunctions(tmp_path)  # never started: nothing below may need tor
    tor_policy = TorPolicy(circuits=True, onion_services=True, max_onion_services=1)
    policy = NodePolicy(network={"listen": True}, tor=tor_policy)
    none = InstanceTor.open(service, "f0", Needs(), policy)
    assert "needs.tor_circuits" in await _refusal(none, "tor.circuit", length=3)
    assert "needs.tor_circuits" in await _refusal(none, "tor.relays")
    assert "needs.onion_services" in await _refusal(none, "tor.publish", port=8080)

    tor = InstanceTor.open(service, "f1", Needs(tor_circuits=2, onion_services=3, listen=True), policy)
    assert (tor.max_circuits, tor.max_onions) == (2, 1)  # the policy caps the manifest
    assert "no circuit '7' of this instance" in await _refusal(tor, "tor.wait", circuit="7")
    assert "should be a valid string" in await _refusal(tor, "tor.close", circuit=["7"])
    assert "no circuit" in await _refusal(tor, "tor.close", circuit="8")
    assert "unknown broker operation tor.getinfo" in await _refusal(tor, "tor.getinfo")
    assert "port" in await _refusal(tor, "tor.stream", circuit="1", host="x", port=0)
    assert "host" in await _refusal(tor, "tor.stream", circuit="1", host="a b", port=80)
    assert "32-byte Ed25519 seed" in await _refusal(tor, "tor.publish", port=80, key="c2hvcnQ=")
    assert "32-byte Ed25519 seed" in await _refusal(tor, "tor.publish", port=80, key="!!")
    assert "client_auth" in await _refusal(tor, "tor.publish", port=80, client_auth="A" * 51)
    for timeout in ("NaN", "Infinity", "-Infinity", "-1", "1e400"):
        raw = f'{{"op": "tor.wait", "circuit": "7", "timeout": {timeout}}}'.encode()
        refused = json.loads((await Broker(_context(tor)).answer(raw))[0])
        assert (refused["code"], "timeout" in refused["error"]) == ("malformed", True), (timeout, refused)
    assert "extra" in (await _refusal(tor, "tor.circuits", surprise=1)).lower()
    assert "not a listener of this function" in await _refusal(tor, "tor.publish", port=8080)
    assert "not an onion service of this function" in await _refusal(tor, "tor.unpublish", address="x")

    # The last instance of f1 ends: its listeners are let go, nothing of it is left.
    listener = __import__("socket").create_server(("127.0.0.1", 0))
    tor.listening(listener)
    kept = service.functions["f1"].listeners
    assert list(kept) == [listener.getsockname()[1]]
    copy = next(iter(kept.values())).sock
    assert copy is not None and tor.ledger.used["listeners"] == 1
    await tor.close()
    await none.close()
    assert copy.fileno() == -1 and service.functions == {} and service.owners == {}
    assert tor.ledger.used["listeners"] == 0
    listener.close()


async def test_without_its_tor_a_box_says_so(tmp_path: Path) -> None:
    service = TorForFunctions(tmp_path)
    service.failure = "tor did not start"
    tor = InstanceTor.open(service, "f", Needs(tor_circuits=1), NodePolicy(tor=TorPolicy(circuits=True)))
    with pytest.raises(BentoError, match="not available: tor did not start"):
        await asyncio.wait_for(tor.relays(Relays(op="tor.relays")), 5)


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
    assert "port" in await _refusal(caller, "tor.stream", host=somewhere, port=99999)


class _SlowTor(TorForFunctions):
    """A functions' tor whose directory answers only when the test says so (no tor process)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.answer = asyncio.Event()

    async def directory(self, owner: Any) -> Directory:
        await self.answer.wait()
        return _directory()

    async def build(self, owner: Any, path: list[str], hold: Any) -> Any:
        circuit = Circuit(id=str(len(self.circuits) + 1), owner=owner.tag, path=path, hold=hold)
        self.circuits[circuit.id] = circuit
        owner.circuits.add(circuit.id)
        return circuit


async def test_circuits_asked_for_at_once_keep_to_the_limit(tmp_path: Path) -> None:
    """The broker answers an instance's requests concurrently: two circuits asked for
    while the first is still being chosen must not both pass a limit of one."""
    service = _SlowTor(tmp_path)
    tor = InstanceTor.open(service, "f", Needs(tor_circuits=1), NodePolicy(tor=TorPolicy(circuits=True)))
    first = asyncio.create_task(_ask(tor, "tor.circuit", length=2))
    second = asyncio.create_task(_ask(tor, "tor.circuit", length=2))
    await asyncio.sleep(0)  # one turn of the loop: each request runs to its first wait
    service.answer.set()
    results = await asyncio.gather(first, second)
    built = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert len(built) == 1 and len(refused) == 1, results
    assert "holds 1 circuits, its limit" in refused[0]["error"]
    assert len(tor.owner.circuits) == 1 and tor.ledger.used["circuits"] == 1
    await tor.close()
    assert tor.ledger.used["circuits"] == 0, "closing the instance gives its circuits back"


async def test_a_non_finite_timeout_is_refused_and_a_neighbours_timer_keeps_firing(tmp_path: Path) -> None:
    """NaN passed a range check once and reached asyncio.timeout, which broke the loop's timer
    order: a neighbour's short wait never returned. Now no handler ever sees one."""
    service = _SlowTor(tmp_path)
    tor = InstanceTor.open(service, "f", Needs(tor_circuits=1), NodePolicy(tor=TorPolicy(circuits=True)))
    service.answer.set()
    circuit = await _ask(tor, "tor.circuit", length=2)
    hostile = Broker(_context(tor))
    loop = asyncio.get_running_loop()
    started = loop.time()
    neighbour = asyncio.create_task(asyncio.sleep(0.3))
    for spelling in ("NaN", "Infinity", "-Infinity"):
        for fields in (f'"op": "tor.wait", "circuit": "{circuit["circuit"]}"', '"op": "tor.events"'):
            raw = f'{{{fields}, "timeout": {spelling}}}'.encode()
            reply = json.loads((await hostile.answer(raw))[0])
            assert reply["code"] == "malformed" and "timeout" in reply["error"], reply
    await asyncio.wait_for(neighbour, 5)
    assert loop.time() - started < 2
    await tor.close()


async def test_listen_close_cycles_leave_a_bounded_number_of_copies_in_the_server(tmp_path: Path) -> None:
    """A function allowed onion services once left a copy of every listener it ever opened in
    the server (3000 cycles held 2928 descriptors); now at most its listeners budget."""
    service = TorForFunctions(tmp_path)
    policy = NodePolicy(
        network={"allowed": True, "listen": True, "max_listeners": 3},
        tor=TorPolicy(onion_services=True),
    )
    needs = Needs(network=True, listen=True, onion_services=1)
    tor = InstanceTor.open(service, "f", needs, policy)
    broker = Broker(Context(needs, policy, closed_gate(), _no_resolver, tor=tor, budgets=tor.ledger))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        reply, sock = await broker.answer(b'{"op": "listen"}')
        assert json.loads(reply)["ok"] and sock is not None
        sock.close()  # the function's copy (the broker closes its own once sent)
    assert len(service.functions["f"].listeners) == 3 and tor.ledger.usage()["listeners"] == 3
    assert len(os.listdir("/proc/self/fd")) - before <= 3
    await tor.close()
    assert len(os.listdir("/proc/self/fd")) <= before and tor.ledger.usage()["listeners"] == 0


async def test_a_streams_target_passes_the_brokers_gate(tmp_path: Path) -> None:
    """tor.stream once checked the exit policy only: through a function's circuit, the relay's
    own control port answered. Its literal targets now meet the broker's own gate."""
    gate = Gatekeeper(exit_allows=lambda _ip, _port: True, forbidden={("127.0.0.1", 9051)})
    policy = NodePolicy(tor=TorPolicy(circuits=True))
    tor = InstanceTor.open(TorForFunctions(tmp_path), "f", Needs(tor_circuits=1), policy, gate=gate)
    for host in ("127.0.0.1", "::ffff:127.0.0.1", "[::1]", "127.0.0.2"):
        assert "own services" in await _refusal(tor, "tor.stream", circuit="1", host=host, port=9051)
    for host in ("10.0.0.1", "192.168.1.1", "localhost", "tor.localhost"):
        assert "public address" in (
            refused := await _refusal(tor, "tor.stream", circuit="1", host=host, port=80)
        ) or ("local host" in refused), refused
    testnet = NodePolicy(network={"private_destinations": True}, tor=TorPolicy(circuits=True))
    lenient = InstanceTor.open(TorForFunctions(tmp_path), "g", Needs(tor_circuits=1), testnet, gate=gate)
    assert "no circuit" in await _refusal(lenient, "tor.stream", circuit="1", host="10.0.0.1", port=80)
    assert "own services" in await _refusal(lenient, "tor.stream", circuit="1", host="127.0.0.1", port=9051)


class _HungControlPort:
    """What building a circuit asks of Stem; a path through ``hung`` blocks, as a Stem call
    does when tor stops answering."""

    def __init__(self, hung: str) -> None:
        self.hung, self.answer, self.ids = hung, threading.Event(), itertools.count(1)

    def extend_circuit(self, circuit_id: str, path: list[str], purpose: str) -> str:
        if path[0] == self.hung:
            self.answer.wait(30)
        return str(next(self.ids))

    def get_circuit(self, circuit_id: str, default: Any) -> Any:
        return types.SimpleNamespace(status=stem.CircStatus.BUILT)

    def close_circuit(self, circuit_id: str) -> None:
        pass


async def test_a_function_stuck_on_tor_waits_on_its_own_threads_not_its_neighbours(tmp_path: Path) -> None:
    """Every Stem call an instance's request makes runs in its function's threads: one whose
    calls hang holds at most its budget of them, its further calls wait, and a neighbour's
    circuit is built meanwhile."""
    service = TorForFunctions(tmp_path)
    control = _HungControlPort(hung=f"{1:040X}")
    service.tor = types.SimpleNamespace(controller=control)  # type: ignore[assignment]
    service.ready.set()
    service._directory = (time.monotonic(), _directory())
    policy = NodePolicy(tor=TorPolicy(circuits=True, max_circuits=8))
    stuck = InstanceTor.open(service, "stuck", Needs(tor_circuits=8), policy)
    neighbour = InstanceTor.open(service, "neighbour", Needs(tor_circuits=1), policy)
    threads = stuck.ledger.spec.threads
    calls = [
        asyncio.ensure_future(_ask(stuck, "tor.circuit", path=[f"{1:040X}"])) for _ in range(threads + 2)
    ]
    try:
        built = await asyncio.wait_for(_ask(neighbour, "tor.circuit", path=[f"{2:040X}"]), 5)
        assert built["ok"] and built["state"] == "built", built
        assert stuck.ledger.usage()["threads"] == threads and not any(c.done() for c in calls)
    finally:
        control.answer.set()
    replies = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert all(r["ok"] for r in replies), "past its threads, a call waited for one; it was not refused"
    await stuck.close()
    await neighbour.close()
    assert stuck.ledger.usage()["threads"] == 0 == stuck.ledger.usage()["circuits"]
