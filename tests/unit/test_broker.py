"""The broker: it connects only to checked addresses, in every spelling, and survives any request.

The broker runs for real here, on a real SOCK_SEQPACKET pair; only the resolver is faked,
so that a name can change its answer between two lookups (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from bento.protocol.policy import Needs, NodePolicy
from bento.runtime import net
from bento.server.broker import (
    Context,
    Denied,
    Gatekeeper,
    Granted,
    Operation,
    Request,
    Table,
    normalise,
    refresh,
)
from bento.server.broker.budgets import BudgetSpec, Ledger
from bento.server.broker.service import MAX_IN_FLIGHT, MAX_REPLY, MAX_REQUEST, TAG, Broker
from properties import examples

# Loopback is where the test's sites live; lookups past the in-flight bound, so that it shows.
NETWORK = NodePolicy(
    network={"allowed": True, "listen": True, "private_destinations": True, "max_lookups": 4 * MAX_IN_FLIGHT}
)
OWN_PORT = 9051  # stands for tor's control port, the API, ...


class Resolver:
    """Answers from a script, one answer per lookup (the last repeats); counts lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def __call__(self, host: str) -> list[str]:
        self.lookups += 1
        return self.answers[min(self.lookups, len(self.answers)) - 1]


def _gate(own: set[tuple[str, int]] | None = None) -> Gatekeeper:
    return Gatekeeper(exit_allows=lambda _ip, _port: True, forbidden=own or {("127.0.0.1", OWN_PORT)})


def _broker(resolver: Any = None, gate: Gatekeeper | None = None, **needs: Any) -> Broker:
    return Broker(
        Context(
            Needs(network=True, listen=True, **needs),
            NETWORK,
            gate or _gate(),
            resolver or Resolver(["127.0.0.1"]),
        )
    )


async def _ask(
    broker: Broker, request: dict[str, Any] | bytes
) -> tuple[dict[str, Any], socket.socket | None]:
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    reply, granted = await broker.answer(raw)
    return json.loads(reply), granted


@pytest.fixture
async def site() -> AsyncIterator[int]:
    """A listening socket on loopback that is not one of the box's own services."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


# --- rebinding, and every spelling of "this host" ---------------------------------------------


async def test_a_name_that_changes_its_answer_is_connected_to_the_checked_address(site: int) -> None:
    """First answer: a harmless site; any later answer: the box's own service. Only one lookup."""
    resolver = Resolver(["127.0.0.1"], ["127.0.0.1"])
    gate = _gate({("127.0.0.1", OWN_PORT)})
    broker = _broker(resolver, gate)
    reply, granted = await _ask(broker, {"op": "connect", "host": "rebind.example", "port": site})
    assert reply == {"ok": True, "peer": ["127.0.0.1", site]}
    assert granted is not None and granted.getpeername() == ("127.0.0.1", site)
    granted.close()
    assert resolver.lookups == 1, "connected to what was checked, not to a second answer"


async def test_a_name_whose_first_answer_is_own_is_refused_whatever_comes_next() -> None:
    resolver = Resolver(["192.0.2.7", "::ffff:127.0.0.1"], ["192.0.2.7"])
    reply, granted = await _ask(
        _broker(resolver), {"op": "connect", "host": "evil.example", "port": OWN_PORT}
    )
    assert (reply["ok"], reply["code"], granted) == (False, "denied", None)
    assert "own services" in reply["error"]
    assert resolver.lookups == 1


LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "0:0:0:0:0:ffff:127.0.0.1",
    "2002:7f00:1::",  # 6to4 around 127.0.0.1
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
async def test_every_literal_spelling_of_loopback_is_refused_for_own_ports(spelling: str) -> None:
    reply, _ = await _ask(_broker(), {"op": "connect", "host": spelling, "port": OWN_PORT})
    assert (reply["ok"], reply["code"]) == (False, "denied"), (spelling, reply)
    assert "own services" in reply["error"]


@pytest.mark.parametrize("spelling", ["0.0.0.0", "::", "::ffff:0.0.0.0"])
async def test_the_unspecified_address_is_never_a_destination(spelling: str) -> None:
    for port in (OWN_PORT, 80):
        reply, _ = await _ask(_broker(), {"op": "connect", "host": spelling, "port": port})
        assert (reply["ok"], reply["code"]) == (False, "denied"), (spelling, reply)


@pytest.mark.parametrize(
    "answer",
    [["127.0.0.1"], ["127.0.0.2"], ["::1"], ["::ffff:127.0.0.1"], ["0.0.0.0"], ["93.184.216.34", "::1"]],
)
async def test_names_that_resolve_to_this_host_are_refused(answer: list[str]) -> None:
    for name in ("localhost", "2130706433", "0x7f.1", "127.1", "rebind.example"):
        reply, _ = await _ask(_broker(Resolver(answer)), {"op": "connect", "host": name, "port": OWN_PORT})
        assert (reply["ok"], reply["code"]) == (False, "denied"), (name, answer, reply)


async def test_a_service_bound_to_every_address_is_own_at_any_local_address() -> None:
    gate = _gate({("0.0.0.0", OWN_PORT)})
    for spelling in ("127.0.0.1", "127.3.2.1", "::ffff:127.0.0.9"):
        with pytest.raises(Denied, match="own services"):
            gate.check(normalise(spelling), OWN_PORT)


async def test_an_address_of_a_local_interface_is_this_host() -> None:
    """Not only loopback: any address this machine holds reaches a service bound to 0.0.0.0."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("127.0.0.1", 9))  # no packet leaves: this only picks a source address
        local = probe.getsockname()[0]
    with pytest.raises(Denied):
        _gate().check(normalise(local), OWN_PORT)


async def test_other_ports_on_loopback_and_other_hosts_pass_the_gate(site: int) -> None:
    _gate().check(normalise("127.0.0.1"), site)
    _gate().check(normalise("192.0.2.1"), OWN_PORT)  # not this host: only the exit policy decides


async def test_the_exit_policy_sees_the_normalised_address() -> None:
    seen: list[tuple[str, int]] = []
    gate = Gatekeeper(exit_allows=lambda ip, port: bool(seen.append((ip, port))), forbidden=set())
    with pytest.raises(Denied, match="exit policy"):
        gate.check(normalise("::ffff:192.0.2.1"), 80)
    assert seen == [("192.0.2.1", 80)]


@pytest.mark.parametrize("spelling", ["fe80::1%lo", "::127.0.0.1", "not-an-ip"])
def test_unusable_addresses_are_refused_by_name(spelling: str) -> None:
    with pytest.raises(Denied):
        normalise(spelling)


# --- requests: bounded, typed, always answered --------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (b"[" * 4000, "malformed", "recursion limit"),
        (b'{"op": "connect", "host": ' + b"[" * 2000 + b"}", "malformed", "recursion limit"),
        (b"x" * (MAX_REQUEST + 1), "malformed", f"at most {MAX_REQUEST} bytes"),
        (b"\xff\xfe", "malformed", "JSON"),
        (b"[]", "malformed", "JSON object"),
        (b"{}", "malformed", "'op'"),
        (b'{"op": "teleport"}', "malformed", "unknown broker operation"),
        (b'{"op": "connect", "host": "a", "port": 0}', "malformed", "port"),
        (b'{"op": "connect", "host": "a", "port": 70000}', "malformed", "port"),
        (b'{"op": "connect", "host": "a\\u0000b", "port": 80}', "malformed", "host"),
        (b'{"op": "connect", "host": "' + b"a" * 254 + b'", "port": 80}', "malformed", "host"),
        (b'{"op": "resolve", "host": "a", "extra": 1}', "malformed", "extra"),
        (b'{"op": "listen", "port": 80}', "denied", "network.listen_ports"),
        (b'{"op": "listen", "port": 9050}', "denied", "network.listen_ports"),
    ],
)
async def test_bad_requests_get_a_clear_refusal(request_: bytes, code: str, words: str) -> None:
    broker = _broker()
    reply, granted = await _ask(broker, request_)
    assert (reply["ok"], reply["code"], granted) == (False, code, None), reply
    assert words in reply["error"], reply
    assert broker.denied == 1 and broker.granted == 0


async def test_a_manifest_without_network_gets_nothing() -> None:
    broker = Broker(Context(Needs(), NETWORK, _gate(), Resolver(["192.0.2.1"])))
    requests: list[dict[str, Any]] = [
        {"op": "resolve", "host": "a.example"},
        {"op": "connect", "host": "192.0.2.1", "port": 80},
        {"op": "listen"},
    ]
    for request in requests:
        reply, _ = await _ask(broker, request)
        assert (reply["ok"], reply["code"]) == (False, "denied"), reply
        assert "manifest" in reply["error"]


async def test_each_refusal_is_told_by_a_reason_from_a_fixed_set() -> None:
    reasons: list[str] = []
    no_budget = Ledger(BudgetSpec())  # a function given no lookups at all
    broker = Broker(
        Context(
            Needs(network=True),
            NETWORK,
            _gate(),
            Resolver(["192.0.2.1"]),
            on_refusal=reasons.append,
            budgets=no_budget,
        )
    )
    await _ask(broker, {"op": "resolve", "host": "a.example"})
    await _ask(broker, {"op": "listen"})  # not in its manifest
    await _ask(broker, b"{")
    assert reasons == ["budget-lookups", "denied", "malformed"]


async def test_a_failing_resolver_is_an_error_reply_not_a_dead_broker() -> None:
    async def broken(host: str) -> list[str]:
        raise RuntimeError("a bug in a resolver")

    async def failing(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    reply, _ = await _ask(_broker(broken), {"op": "resolve", "host": "a.example"})
    assert (reply["ok"], reply["code"], reply["error"]) == (False, "internal", "internal error")
    reply, _ = await _ask(_broker(failing), {"op": "resolve", "host": "a.example"})
    assert (reply["ok"], reply["code"], reply["denied"]) == (False, "failed", False)
    assert "not known" in reply["error"]


async def test_resolve_and_listen_grant_what_they_say() -> None:
    broker = _broker(Resolver(["192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"]))
    reply, _ = await _ask(broker, {"op": "resolve", "host": "a.example"})
    assert reply == {"ok": True, "addresses": ["192.0.2.1", "2001:db8::1"]}
    reply, granted = await _ask(broker, {"op": "listen"})
    assert reply["ok"] and granted is not None
    assert granted.getsockname()[0] == "127.0.0.1" and reply["address"][1] == granted.getsockname()[1]
    granted.close()


# --- over the socket: one tagged message, one reply with its tag, whatever comes -----------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[Broker, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    broker = _broker(Resolver(["127.0.0.1"]))
    serving = asyncio.create_task(broker.serve(ours))
    theirs.settimeout(10)
    try:
        yield broker, theirs
    finally:
        theirs.close()
        await asyncio.wait_for(serving, 10)  # it ends when the instance closes its end
        ours.close()


def _tagged(request: dict[str, Any] | bytes, tag: int = 7) -> bytes:
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    return TAG.pack(tag) + body


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, TAG.size + MAX_REPLY, 1)
    (tag,) = TAG.unpack_from(data)
    reply = json.loads(data[TAG.size :])
    assert isinstance(reply, dict)
    return tag, reply, fds


async def _exchange(sock: socket.socket, message: bytes) -> tuple[dict[str, Any], list[int]]:
    """Send one message as it is; its reply, whose tag must be the message's (0 if it has none)."""

    def talk() -> tuple[int, dict[str, Any], list[int]]:
        sock.send(message)
        return _read_reply(sock)

    tag, reply, fds = await asyncio.to_thread(talk)
    assert tag == (TAG.unpack_from(message)[0] if len(message) >= TAG.size else 0)
    return reply, fds


async def test_a_granted_socket_arrives_with_its_reply(
    served: tuple[Broker, socket.socket], site: int
) -> None:
    _, sock = served
    reply, fds = await _exchange(sock, _tagged({"op": "connect", "host": "127.0.0.1", "port": site}))
    assert reply["ok"] and len(fds) == 1
    with socket.socket(fileno=fds[0]) as granted:
        assert granted.getpeername() == ("127.0.0.1", site)


@pytest.mark.timeout(120)
async def test_random_bytes_on_the_broker_socket_are_each_answered(
    served: tuple[Broker, socket.socket],
) -> None:
    _, sock = served
    loop = asyncio.get_running_loop()
    structured = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    )
    bodies = st.one_of(
        st.integers(1, 3000).map(lambda n: b"[" * n),
        st.integers(1, 3000).map(lambda n: b'{"op": "connect", "host": ' + b"{" * n),
        st.fixed_dictionaries(
            {"op": st.sampled_from(["connect", "resolve", "listen", "x"])},
            optional={"host": structured, "port": structured, "extra": structured},
        ).map(lambda d: json.dumps(d).encode()),
    )
    requests = st.one_of(
        st.binary(min_size=1, max_size=TAG.size + MAX_REQUEST + 100),  # any framing at all
        st.builds(lambda tag, body: TAG.pack(tag) + body, st.integers(0, 2**32 - 1), bodies),
    )

    @settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=requests)
    def fuzz(request: bytes) -> None:
        reply, fds = asyncio.run_coroutine_threadsafe(_exchange(sock, request), loop).result(30)
        for fd in fds:
            socket.socket(fileno=fd).close()
        assert set(reply) >= {"ok"}
        if not reply["ok"]:
            assert reply["code"] in {"denied", "malformed", "failed"}, reply

    await asyncio.to_thread(fuzz)
    reply, _ = await _exchange(sock, _tagged({"op": "resolve", "host": "still.example"}))
    assert reply == {"ok": True, "addresses": ["127.0.0.1"]}, "the broker serves on"


class HeldResolver:
    """Answers a lookup only when the test lets it (``release``); counts lookups under way."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.under_way = 0
        self.most = 0
        self.changed = asyncio.Condition()

    async def __call__(self, host: str) -> list[str]:
        async with self.changed:
            self.under_way += 1
            self.most = max(self.most, self.under_way)
            self.changed.notify_all()
        try:
            if host.startswith("slow"):
                await self.released.wait()
            return ["127.0.0.1"]
        finally:
            self.under_way -= 1

    async def until(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.under_way == count)


@pytest.fixture
async def held() -> AsyncIterator[tuple[HeldResolver, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    resolver = HeldResolver()
    serving = asyncio.create_task(_broker(resolver).serve(ours))
    theirs.settimeout(10)
    try:
        yield resolver, theirs
    finally:
        resolver.released.set()
        theirs.close()
        await asyncio.wait_for(serving, 10)
        ours.close()


async def test_a_slow_request_holds_up_no_other(held: tuple[HeldResolver, socket.socket]) -> None:
    resolver, sock = held
    sock.send(_tagged({"op": "resolve", "host": "slow.example"}, tag=1))
    await resolver.until(1)
    tag, reply, fds = await asyncio.to_thread(
        lambda: (sock.send(_tagged({"op": "listen"}, tag=2)), _read_reply(sock))[1]
    )
    assert tag == 2 and reply["ok"] and len(fds) == 1, "answered while the lookup waits"
    socket.socket(fileno=fds[0]).close()
    resolver.released.set()
    tag, reply, _ = await asyncio.to_thread(_read_reply, sock)
    assert (tag, reply) == (1, {"ok": True, "addresses": ["127.0.0.1"]})


async def test_a_flood_of_requests_is_answered_a_bounded_number_at_a_time(
    held: tuple[HeldResolver, socket.socket],
) -> None:
    resolver, sock = held
    asked = MAX_IN_FLIGHT + 10

    def flood() -> None:  # more than the socket holds: the last sends wait for the broker to read
        for tag in range(1, asked + 1):
            sock.send(_tagged({"op": "resolve", "host": f"slow{tag}.example"}, tag=tag))

    flooding = asyncio.ensure_future(asyncio.to_thread(flood))
    await resolver.until(MAX_IN_FLIGHT)  # the broker stops reading here: the rest wait in the socket
    resolver.released.set()
    replies = await asyncio.to_thread(lambda: [_read_reply(sock) for _ in range(asked)])
    await flooding
    assert sorted(tag for tag, _, _ in replies) == list(range(1, asked + 1))
    assert all(reply["ok"] for _, reply, _ in replies)
    assert resolver.most == MAX_IN_FLIGHT


async def test_slow_lookups_are_bounded_per_function_and_a_neighbour_still_resolves() -> None:
    """One function's lookups held by a slow resolver take at most network.max_lookups of the
    box's resolver at once; its next waits on its own, and another function's goes on."""
    policy = NodePolicy(network={"allowed": True, "max_lookups": 2})
    slow = HeldResolver()
    hostile = Broker(Context(Needs(network=True), policy, _gate(), slow))
    asked = [_ask(hostile, {"op": "resolve", "host": f"slow{n}.example"}) for n in range(3)]
    waiting = [asyncio.create_task(a) for a in asked]
    await slow.until(2)
    neighbour = Broker(Context(Needs(network=True), policy, _gate(), Resolver(["192.0.2.9"])))
    reply, _ = await _ask(neighbour, {"op": "resolve", "host": "fine.example"})
    assert reply == {"ok": True, "addresses": ["192.0.2.9"]}
    assert slow.under_way == 2 and hostile.context.ledger.usage()["lookups"] == 2, "the third waits its turn"
    slow.released.set()
    assert all(r[0]["ok"] for r in await asyncio.gather(*waiting))
    assert slow.most == 2 and hostile.context.ledger.usage()["lookups"] == 0


async def test_the_runtimes_threads_each_get_their_own_reply(
    held: tuple[HeldResolver, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function's side (bento.runtime.net) against the real broker: one thread waits
    for a slow lookup while others connect and listen, each given its own answer."""
    resolver, sock = held
    sock.settimeout(None)
    monkeypatch.setattr(net, "_broker", sock)
    slow = asyncio.create_task(asyncio.to_thread(net.resolve, "slow.example"))
    await resolver.until(1)
    listeners = await asyncio.gather(*(asyncio.to_thread(net.listen) for _ in range(8)))
    assert len({listener.getsockname()[1] for listener in listeners}) == 8
    for listener in listeners:
        listener.close()
    assert not slow.done()
    resolver.released.set()
    assert await slow == ["127.0.0.1"]
    assert net._waiting == set() and net._replies == {} and not net._reading


# --- the table: how an operation plugs in --------------------------------------------------------


class Echo(Request):
    op: Literal["test.echo"]
    size: int = Field(ge=0)


async def _echo(context: Context, request: Echo) -> Granted:
    if request.size == 13:
        raise KeyError("thirteen")  # a handler's own check of a field
    return Granted({"data": "x" * request.size})


async def test_an_operation_plugs_in_with_a_model_and_a_handler() -> None:
    broker = Broker(_broker().context, Table(Operation(Echo, _echo)))
    reply, _ = await _ask(broker, {"op": "test.echo", "size": 3})
    assert reply == {"ok": True, "data": "xxx"}
    reply, _ = await _ask(broker, {"op": "connect", "host": "a", "port": 1})
    assert reply["code"] == "malformed" and "this box knows: test.echo" in reply["error"]
    reply, _ = await _ask(broker, {"op": "test.echo", "size": 13})
    assert (reply["code"], reply["denied"]) == ("malformed", True) and "thirteen" in reply["error"]
    reply, _ = await _ask(broker, {"op": "test.echo", "size": MAX_REPLY})
    assert (reply["code"], reply["error"]) == ("internal", "internal error"), "a reply is never cut"
    with pytest.raises(ValueError, match="share a name"):
        Table(Operation(Echo, _echo), Operation(Echo, _echo))


# --- the gate fails closed, and non-global destinations need the policy ----------------------------


class _Tor:
    """What refresh() asks of a Stem controller; ``broken`` listener kinds fail to answer."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken

    def get_listeners(self, kind: str) -> list[tuple[str, int]]:
        if kind in self.broken:
            raise OSError(f"GETINFO net/listeners/{kind.lower()} failed")
        return [("127.0.0.1", 9051)] if kind == "CONTROL" else []

    def clear_cache(self) -> None:
        pass

    def get_exit_policy(self) -> Any:
        from stem.exit_policy import ExitPolicy

        return ExitPolicy("accept *:*")


def test_a_gate_that_cannot_read_its_own_listeners_denies_everything() -> None:
    gate = _gate()
    refresh(gate, _Tor(set()), set())
    gate.check(normalise("192.0.2.5"), 80)  # tor answered: the exit policy allows it
    assert ("127.0.0.1", 9051) in gate.forbidden
    with pytest.raises(OSError, match="net/listeners/socks"):
        refresh(gate, _Tor({"SOCKS"}), set())
    with pytest.raises(Denied, match="exit policy"):  # closed until a refresh succeeds
        gate.check(normalise("192.0.2.5"), 80)
    refresh(gate, _Tor(set()), set())
    gate.check(normalise("192.0.2.5"), 80)


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "192.168.0.1", "169.254.1.1", "100.64.0.1", "fc00::1", "127.0.0.1"]
)
async def test_non_global_destinations_need_the_policy(address: str) -> None:
    closed = NodePolicy(network={"allowed": True})
    broker = Broker(Context(Needs(network=True), closed, _gate(), Resolver([address])))
    reply, granted = await _ask(broker, {"op": "connect", "host": "inside.example", "port": 80})
    assert (reply["code"], granted) == ("denied", None) and "not a public address" in reply["error"], reply
