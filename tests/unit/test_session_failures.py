"""Whatever fails while a session starts or runs, it ends with a cause and leaves nothing behind.

Failures are injected at each step of a session's life (the sandbox, the START frame, the
broker, stderr, the channel, a cancellation); hostile instances send what a parser chokes
on. After each: the session has ended with a reason, its instance is dead, its instance
slot is free again, and the registry owns no task for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from localbox import LocalBox

from bento.protocol.frames import HEADER, Frame, FrameError
from bento.protocol.policy import Needs
from bento.sandbox.host import SandboxHost
from bento.sandbox.spec import Spec
from bento.server.broker.service import Broker
from bento.server.session import Session
from properties import examples

SOURCE = """
import time
from bento.runtime import api

def main():
    api.send("hello")
    return "done"

def forever():
    api.send("started")
    time.sleep(120)
"""


class Injected(Exception):
    """A failure put there by the test."""


async def _fail(*_args: Any, **_kwargs: Any) -> Any:
    raise Injected("injected failure")


def _fail_now(*_args: Any, **_kwargs: Any) -> Any:
    raise Injected("injected failure")


STEPS: dict[str, tuple[Any, str, Any]] = {
    "acquire": (SandboxHost, "acquire", _fail),
    "start-frame": (Session, "_start_frame", _fail_now),
    "broker": (Broker, "serve", _fail),
    "stderr": (Session, "_drain_stderr", _fail),
    "channel": (Session, "_pump", _fail),
}


def _nothing_left(box: LocalBox, session: Session, slots: int) -> None:
    assert session.ended and session.cause is not None and session.reason, session.info()
    assert session.done.is_set()
    if session.instance is not None:
        assert session.instance.process.returncode is not None, "its instance is dead"
    assert len(box.registry.sandbox.slots) == slots, "its instance slot is free again"
    assert session.id not in box.registry._tasks, "no task is left for it"


@pytest.mark.parametrize("step", list(STEPS))
async def test_a_failure_at_each_step_ends_the_session_and_leaves_nothing(
    box: LocalBox, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = await box.upload(SOURCE)
    slots = len(box.registry.sandbox.slots)
    owner, name, replacement = STEPS[step]
    monkeypatch.setattr(owner, name, replacement)
    session_id = await box.invoke(function, "forever")
    info = await box.wait_state(function, session_id, timeout=30)
    session = box.registry.sessions[session_id]
    assert info["state"] != "running"
    assert session.cause is not None
    await _exited(session)
    _nothing_left(box, session, slots)
    monkeypatch.undo()
    # ... and the box serves on.
    again = await box.invoke(function, "main")
    assert (await box.wait_state(function, again))["state"] == "completed"


async def _exited(session: Session) -> None:
    if session.instance is not None:
        await asyncio.wait_for(session.instance.wait(), 10)


@pytest.mark.parametrize("moment", ["at once", "once started", "while it runs"])
async def test_a_cancelled_session_ends_and_leaves_nothing(box: LocalBox, moment: str) -> None:
    function = await box.upload(SOURCE)
    slots = len(box.registry.sandbox.slots)
    session_id = await box.invoke(function, "forever")
    session = box.registry.sessions[session_id]
    if moment != "at once":
        await box.wait_state(function, session_id, ended=False)
    if moment == "while it runs":
        assert await asyncio.wait_for(session.output.read(0), 30) == b"started"
    box.registry._tasks[session_id].cancel()
    info = await box.wait_state(function, session_id)
    assert (info["state"], info["cause"]) == ("killed", "shutdown"), info
    await _exited(session)
    _nothing_left(box, session, slots)


async def test_shutdown_is_never_left_waiting_by_a_failing_session(
    box: LocalBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = await box.upload(SOURCE)
    monkeypatch.setattr(Broker, "serve", _fail)
    sessions = [await box.invoke(function, "forever") for _ in range(3)]
    stopped = await asyncio.wait_for(
        box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth), 30
    )
    assert stopped.status_code == 200
    for session_id in sessions:
        assert session_id not in box.registry.sessions


# --- hostile instances --------------------------------------------------------------------------

HOSTILE = """
from bento.protocol.frames import Frame
from bento.runtime import api, net

def deep_broker():
    tag = (1).to_bytes(4, "big")  # each request starts with its tag
    net._broker.send(tag + b"[" * 4000)
    refused = net._broker.recv(65540)[4:].decode()
    net._broker.send(tag + b"{" * 4096 + b"x")  # one byte over the broker's limit
    too_large = net._broker.recv(65540)[4:].decode()
    return [refused, too_large]

def deep_frame(kind):
    api._get().send(Frame[kind], b'{"value": ' + b"[" * 200000 + b"]" * 200000 + b"}")
    import time
    time.sleep(60)

def garbage(seed):
    import random
    rng = random.Random(seed)
    api._get().sock.sendall(bytes(rng.getrandbits(8) for _ in range(4096)))
    import time
    time.sleep(60)
"""


async def test_a_deeply_nested_broker_request_is_refused_and_the_session_completes(box: LocalBox) -> None:
    function = await box.upload(HOSTILE)
    session_id = await box.invoke(function, "deep_broker")
    info = await box.wait_state(function, session_id, timeout=30)
    assert info["state"] == "completed", info["reason"]
    refused, too_large = box.registry.sessions[session_id].result
    assert "recursion limit" in refused and '"denied": true' in refused
    assert "at most 4096 bytes" in too_large
    assert info["usage"]["network_denied"] == 2


@pytest.mark.parametrize("kind", ["RESULT", "ERROR"])
async def test_a_deeply_nested_frame_is_a_protocol_violation(box: LocalBox, kind: str) -> None:
    function = await box.upload(HOSTILE)
    session_id = await box.invoke(function, "deep_frame", kind)
    info = await box.wait_state(function, session_id, timeout=30)
    assert (info["state"], info["cause"]) == ("killed", "policy"), info["reason"]
    assert f"malformed {kind} frame" in info["reason"]


@pytest.mark.parametrize("seed", range(4))
async def test_random_bytes_on_the_channel_end_the_session_with_a_cause(box: LocalBox, seed: int) -> None:
    function = await box.upload(HOSTILE, needs={"wall_seconds": 5})
    session_id = await box.invoke(function, "garbage", seed)
    info = await box.wait_state(function, session_id, timeout=30)
    assert info["state"] == "killed" and info["cause"] in ("policy", "wall"), info


@settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.lists(
            st.tuples(st.sampled_from(list(Frame)), st.binary(max_size=300)),
            max_size=5,
        ).map(lambda frames: b"".join(HEADER.pack(k, len(p)) + p for k, p in frames)),
        st.tuples(st.sampled_from([Frame.RESULT, Frame.ERROR]), st.integers(1, 5000)).map(
            lambda kp: HEADER.pack(kp[0], 2 * kp[1] + 12) + b'{"value":' + b"[" * kp[1] + b"]" * kp[1] + b"}"
        ),
    )
)
def test_the_channel_parser_accepts_or_refuses_any_bytes(data: bytes) -> None:
    """Anything an instance writes makes the pump return, or raise FrameError (a policy kill)."""

    async def pump() -> None:
        session = Session("s", "f", "main", 1 << 20)
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        with contextlib.suppress(FrameError):
            await asyncio.wait_for(session._pump(reader, 1 << 20), 10)

    asyncio.run(pump())


async def test_a_pooled_sandbox_gets_the_code_and_a_cancelled_take_kills_it(
    box: LocalBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = box.registry.sandbox
    pool = asyncio.create_task(sandbox.keep_pool(1))
    try:
        function = await box.upload(SOURCE)
        await _pool_filled(sandbox)
        session_id = await box.invoke(function, "main")
        assert (await box.wait_state(function, session_id, timeout=30))["state"] == "completed"

        await _pool_filled(sandbox)
        pooled = sandbox.pool.idle[0]
        monkeypatch.setattr(SandboxHost, "_fill", _fail_now)  # the copy fails (or is cancelled)
        session_id = await box.invoke(function, "main")
        info = await box.wait_state(function, session_id, timeout=30)
        assert (info["state"], info["cause"]) == ("error", "error") and "Injected" in info["reason"], info
        await asyncio.wait_for(pooled.wait(), 10)  # taken from the pool, never handed out: killed
    finally:
        pool.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pool


async def _pool_filled(sandbox: SandboxHost) -> None:
    async with asyncio.timeout(30):
        await sandbox.pool.stocked(Spec.of(Needs()).shape)  # the shape of the default manifest
