"""The broker's whole protocol under Hypothesis: every operation it knows (network, storage,
Tor for functions) and some it does not, with random JSON values, non-finite numbers, huge
integers, deep nesting, wrong types and unknown fields, many tags at once, over the real
socket framing of a real broker. The broker never wedges or crashes, answers every tagged
request exactly once, keeps serving, ends when the instance goes, and gives back every
budget unit it took.

Nothing leaves this machine: the gate denies every destination, the resolver is a script,
and the functions' tor reports itself unavailable, so requests that reach it fail at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento.protocol.policy import Needs, NodePolicy
from bento.server.broker import Context, closed_gate
from bento.server.broker.service import MAX_REPLY, MAX_REQUEST, TAG, Broker
from bento.server.broker.table import OPERATIONS
from bento.server.broker.tor import requests
from bento.server.broker.tor.instance import InstanceTor
from bento.server.broker.tor.service import TorForFunctions
from bento.server.store import StorageChannel, Store
from properties import examples

POLICY = NodePolicy(
    network={"allowed": True, "listen": True},
    tor={"circuits": True, "onion_services": True, "call_boxes": True},
    storage={"allowed": True, "max_mb": 4},
)
NEEDS = Needs(network=True, listen=True, tor_circuits=4, onion_services=2, call_boxes=True, storage_mb=1)
FIELDS = sorted({name for op in OPERATIONS.operations.values() for name in op.request.model_fields} - {"op"})


async def _resolver(host: str) -> list[str]:
    return ["127.0.0.1"]


@pytest.fixture
async def instance(tmp_path: Path) -> AsyncIterator[tuple[Broker, socket.socket, asyncio.Task[None]]]:
    store = Store(tmp_path / "storage")
    store.reset()
    service = TorForFunctions(tmp_path)
    service.failure = "this test runs no tor"  # requests that reach tor fail at once
    tor = InstanceTor.open(service, "f", NEEDS, POLICY, gate=closed_gate())
    storage = StorageChannel(store.of("f", NEEDS.storage_mb), tor.ledger)
    context = Context(NEEDS, POLICY, closed_gate(), _resolver, "f", "s", storage, tor, budgets=tor.ledger)
    broker = Broker(context)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    serving = asyncio.create_task(broker.serve(ours))
    theirs.settimeout(30)
    try:
        yield broker, theirs, serving
    finally:
        theirs.close()
        await asyncio.wait_for(serving, 10)
        ours.close()
        await store.aclose()


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**64, -(2**63) - 1, 10**300, 65535, 65536, 0, -1, 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
    st.text(max_size=40),
    st.sampled_from(["7", "127.0.0.1", "localhost", "::1", "a" * 56 + ".onion", "$" + "A" * 40, "NaN"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ops = st.sampled_from([*sorted(OPERATIONS.operations), "tor.getinfo", "storage.", "", "CONNECT"])


def _fields_of(op: str) -> list[str]:
    known = OPERATIONS.operations.get(op)
    return [name for name in known.request.model_fields if name != "op"] if known else FIELDS[:4]


# Mostly an operation with some of its own fields (so that handlers are reached), at times
# with another's fields or unknown ones.
_requests = _ops.flatmap(
    lambda op: st.fixed_dictionaries(
        {"op": st.just(op) if op else st.integers() | st.none()},
        optional={name: _values for name in [*_fields_of(op), "extra"]},
    )
).map(lambda d: json.dumps(d).encode())  # json.dumps writes NaN and Infinity as JavaScript does
_bodies = st.one_of(
    _requests,
    _requests,
    st.integers(1, 2500).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.integers(1, 1500).map(lambda n: b'{"op": "tor.relays", "flags": ' + b"[" * n + b"]" * n + b"}"),
    st.binary(max_size=64),
    st.just(b"x" * (MAX_REQUEST + 1)),
)
_batches = st.lists(_bodies, min_size=1, max_size=24)  # one instance's requests, all in flight at once


def _read(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, TAG.size + MAX_REPLY, 4)
    for fd in fds:
        socket.socket(fileno=fd).close()  # a granted socket: the function's to close
    (tag,) = TAG.unpack_from(data)
    reply = json.loads(data[TAG.size :])
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert reply["code"] in {"denied", "malformed", "failed"}, reply
    return tag, reply


@pytest.mark.timeout(120)
async def test_any_batch_of_requests_is_each_answered_once_and_the_broker_ends_clean(
    instance: tuple[Broker, socket.socket, asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, sock, serving = instance
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(requests, "MAX_WAIT", 0.05)  # tor.wait and tor.events: each batch stays quick

    @settings(max_examples=examples(400), deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=_batches)
    def fuzz(batch: list[bytes]) -> None:
        def talk() -> list[tuple[int, dict[str, Any]]]:
            for tag, body in enumerate(batch, start=1):
                sock.send(TAG.pack(tag) + body)
            return [_read(sock) for _ in batch]

        replies = asyncio.run_coroutine_threadsafe(asyncio.to_thread(talk), loop).result(60)
        assert sorted(tag for tag, _ in replies) == list(range(1, len(batch) + 1)), "each answered once"
        assert not serving.done(), "the broker serves on"
        # The loop's timers still fire (a NaN deadline once broke their order for every session).
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.001), loop).result(10)

    await asyncio.to_thread(fuzz)
    reply = await asyncio.to_thread(
        lambda: (sock.send(TAG.pack(9) + b'{"op": "storage.usage"}'), _read(sock))[1]
    )
    assert reply == (9, {"ok": True, "used": 0, "quota": 1 << 20, "objects": 0}) or reply[1]["ok"], reply
    sock.close()  # the instance ends: the broker concludes and gives back all it holds
    await asyncio.wait_for(serving, 10)
    assert serving.exception() is None
    await asyncio.sleep(0)  # done-callbacks of cancelled transfers run on the loop's next turn
    held = {
        name: n for name, n in broker.context.ledger.usage().items() if n and name != "circuits_per_minute"
    }
    assert held == {}, f"budget units left after the instance ended: {held}"
