"""Composition on the testnet: a function on box A uses the client library to deploy, call,
stream from and shut down a function on box B; the test's client only ever talks to A."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from functions import HELLO
from support import TIMEOUT, drain, run

from bento.client.box import Box
from bento.errors import BentoError
from bento.protocol.manifest import Manifest
from bento.protocol.onion import onion_address
from bento.protocol.policy import Needs
from bento.sandbox.host import work_dir_of
from bento.testnet import Testnet

pytestmark = pytest.mark.timeout(600)

CALLER = """
from bento.client import sync
from bento.errors import BentoError
from bento.protocol.manifest import Manifest

def compose(onion, source):
    found = [b for b in sync.boxes() if b.onion == onion]
    with sync.connect(found[0]) as box:
        described = box.descriptor()                      # verified against the relay's advert
        deployment = box.deploy(source.encode(), Manifest(name="callee"))
        output, ended = box.call(deployment, "shout", ["from A"], input=b"ping")
        session = box.invoke(deployment, "count", [3])
        streamed = b"".join(box.stream(deployment, session))
        stopped = box.shutdown(deployment)
    return {
        "relay": described.relay_fingerprint, "output": output.decode(), "result": ended.result,
        "streamed": streamed.decode(), "stopped": stopped.sessions_stopped,
        "count_result": box.last_ended.result, "ended": f"{ended.cause}: {ended.reason}",
    }

def vanishing(onion, source):
    from bento.runtime import api
    from bento.client.stream import Retry

    with sync.connect(onion, retry=Retry(attempts=2)) as box:
        deployment = box.deploy(source.encode(), Manifest(name="slow"))
        session = box.invoke(deployment, "wait_forever")
        api.send("called\\n")
        try:
            return "streamed: " + b"".join(box.stream(deployment, session)).decode()
        except BentoError as exc:
            return "error: " + str(exc)

def outside(onion):
    from bento.runtime import api
    try:
        api.tor.connect_onion(onion, 80)
    except PermissionError as exc:
        return str(exc)
    return "connected"
"""

CALLEE = """
import time
from bento.runtime import api

def shout(prefix):
    data = api.recv()
    api.send(prefix + ": " + data.decode().upper())
    return len(data)

def count(n):
    for i in range(n):
        api.send(f"{i};")
    return n

def wait_forever():
    api.send("started")
    time.sleep(600)
"""

CALLER_NEEDS = Needs(call_boxes=True, memory_mb=256, wall_seconds=300, processes=16)


async def _result(box: Box, source: str, entry: str, *args: object) -> object:
    deployment = await box.deploy(source.encode(), Manifest(name="caller", needs=CALLER_NEEDS))
    session = await box.invoke(deployment, entry, list(args))
    _, ended = await drain(box, deployment, session)
    await box.shutdown(deployment)
    assert ended.error is None, ended.error
    return ended.result


async def test_a_function_on_box_a_deploys_calls_and_shuts_down_one_on_box_b(
    testnet: Testnet, box: Box
) -> None:
    b = testnet.state.boxes[1]
    assert b.bento_onion is not None
    async with asyncio.timeout(TIMEOUT):
        out = await _result(box, CALLER, "compose", b.bento_onion, CALLEE)
    assert isinstance(out, dict), out
    assert out["relay"] == b.fingerprint
    assert (out["output"], out["result"]) == ("from A: PING", 4), out["ended"]
    assert out["streamed"] == "0;1;2;" and out["count_result"] == 3
    assert out["stopped"] == 0


async def test_only_bento_boxes_and_only_with_the_need(testnet: Testnet, box: Box) -> None:
    # A function with call_boxes may reach boxes only: not any onion service.
    elsewhere = onion_address(bytes(32))  # a valid onion service address, but no box's
    async with asyncio.timeout(TIMEOUT):
        refused = await _result(box, CALLER, "outside", elsewhere)
    assert f"{elsewhere}.onion is not a Bento box in the consensus" in str(refused)
    plain = await box.deploy(CALLER.encode(), Manifest(name="no-calls"))
    session = await box.invoke(plain, "outside", [testnet.state.boxes[1].bento_onion])
    _, ended = await drain(box, plain, session)
    await box.shutdown(plain)
    assert ended.result is not None and "offers no Tor for functions" in str(ended.result)


async def test_a_callee_box_that_vanishes_mid_call_is_a_clear_error_and_comes_back_empty(
    testnet: Testnet, box: Box
) -> None:
    """Box B is killed mid-call: the caller on A gets a clear error. Restarted, B kept nothing.

    Decided: functions, sessions and tokens live in the server's memory only. A restart
    drops them all (and deletes their code); the onion address stays, the boot id changes,
    and clients are told to deploy again. (One restart serves both checks: each costs the
    box's onion service a republish, minutes on a loaded machine.)
    """
    b = testnet.state.boxes[1]
    assert b.bento_onion is not None and b.bento_dir is not None
    async with Box(b.bento_onion, socks=testnet.socks_address) as on_b:
        before = await on_b.descriptor()
        ephemeral = await on_b.deploy(HELLO.encode(), Manifest(name="ephemeral"))
    code_dir = work_dir_of(Path(b.bento_dir)) / "functions" / ephemeral.function_id
    assert code_dir.exists()

    deployment = await box.deploy(CALLER.encode(), Manifest(name="caller", needs=CALLER_NEEDS))
    session = await box.invoke(deployment, "vanishing", [b.bento_onion, CALLEE])
    async with asyncio.timeout(2 * TIMEOUT), await box.attach(deployment, session) as stream:
        assert await stream.receive() == b"called\n"  # box B runs the callee now
        assert b.bento_pid is not None
        os.kill(b.bento_pid, signal.SIGKILL)  # box B vanishes: no goodbye to anyone
        async for _ in stream:
            pass
    await box.shutdown(deployment)
    await asyncio.to_thread(testnet.restart_box, b.nickname)  # for the tests after this one
    assert stream.ended is not None and stream.ended.error is None, stream.ended
    assert str(stream.ended.result).startswith("error: "), stream.ended.result

    async with Box(b.bento_onion, socks=testnet.socks_address) as on_b:
        after = await on_b.descriptor()
        assert after.onion == before.onion and after.boot_id != before.boot_id
        with pytest.raises(BentoError, match=f"box restarted.*boot id is now {after.boot_id}"):
            await on_b.invoke(ephemeral, "main")
        again = await on_b.deploy(HELLO.encode(), Manifest(name="redeployed"))
        output, _ = await run(on_b, again, "main")
        assert output == b"hello world\n"
        await on_b.shutdown(again)
    assert not code_dir.exists()
