"""Wrong tokens, bad code, crashing functions: clear errors, and the box keeps serving.

(A restart drops every function: test_composition.py checks it on the box it kills.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from functions import BROKEN, HELLO
from support import TIMEOUT, deploy, run

from bento.client.box import Box
from bento.client.capability import Capability
from bento.client.keyring import Deployment
from bento.errors import BentoError
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState, UploadResponse
from bento.protocol.policy import Needs
from bento.server.tokens import new_token
from bento.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]


async def test_every_token_misuse_is_refused(box: Box) -> None:
    mine = await deploy(box, HELLO, "mine")
    theirs = await deploy(box, HELLO, "theirs")

    def posing(invocation: str, shutdown: str) -> Deployment:  # holding none of mine's session rights
        return dataclasses.replace(
            mine, invocation_token=invocation, shutdown_token=shutdown, session_rights={}
        )

    forged = posing(new_token(), new_token())
    swapped = posing(mine.shutdown_token, mine.invocation_token)
    borrowed = posing(theirs.invocation_token, theirs.shutdown_token)
    garbage = posing("not a token", "'; DROP")

    for wrong in (forged, swapped, borrowed, garbage):
        with pytest.raises(BentoError, match="not the invocation token"):
            await box.invoke(wrong, "main")
        with pytest.raises(BentoError, match="not the shutdown token"):
            await box.shutdown(wrong)
        if wrong is not swapped:  # swapped lists with mine's invocation token: the sessions it names
            with pytest.raises(BentoError, match="neither the shutdown nor the invocation token"):
                await box.sessions(wrong)
    session_id = await box.invoke(mine, "main")
    assert (await box.sessions(swapped)).sessions == [], "the invocation token alone lists no session"
    for wrong in (forged, swapped, borrowed):
        with pytest.raises(BentoError, match="not the right of session"):
            await box.session(wrong, session_id)
    with pytest.raises(BentoError, match="not the right of session"):
        stream = await box.attach(forged, session_id)
        await stream.receive()

    # Nothing above disturbed the function: its own tokens still work.
    output, ended = await run(box, mine, "main", "still here")
    assert output == b"hello still here\n" and ended.state is SessionState.COMPLETED

    stopped = await box.shutdown(mine)
    assert stopped.function_id == mine.function_id
    with pytest.raises(BentoError, match="no function"):
        await box.invoke(mine, "main")
    with pytest.raises(BentoError, match="no session"):
        await box.session(mine, session_id)
    with pytest.raises(BentoError, match="no function"):
        await box.shutdown(mine)  # a shutdown token is single-use: its function is gone
    await box.shutdown(theirs)


SECRET = """
from bento.runtime import api

def hold(text):
    api.send(text)
    while api.recv() is not None:
        pass
"""


async def test_the_invocation_token_alone_reaches_no_one_else_s_session(box: Box) -> None:
    """Issue 19: a Dropbox capability carries the invocation token; it must not read others' sessions."""
    owner = await deploy(box, SECRET, "secret")
    victim = await box.invoke(owner, "hold", ["the deposit's bytes"])
    stranger = Capability("invoke", owner.onion, owner.function_id, owner.invocation_token).deployment()
    assert (await box.sessions(stranger)).sessions == []
    with pytest.raises(BentoError, match="not the right of session"):
        async with await box.attach(stranger, victim) as refused:  # closed, not left to the collector
            await refused.receive()
    with pytest.raises(BentoError, match="not the right of session"):
        await box.logs(stranger, victim)
    with pytest.raises(BentoError, match="not the right of session"):
        await box.kill(stranger, victim)

    own = await box.invoke(stranger, "hold", ["the stranger's own"])
    assert [s.session_id for s in (await box.sessions(stranger)).sessions] == [own]
    assert (await box.kill(stranger, own)).state is SessionState.KILLED
    async with asyncio.timeout(TIMEOUT), await box.attach(owner, victim) as stream:
        assert await stream.receive() == b"the deposit's bytes"  # its opener reads it, once
        await stream.close_input()
        async for _ in stream:
            pass
    assert stream.ended is not None and stream.ended.state is SessionState.COMPLETED
    await box.shutdown(owner)


async def test_bad_code_and_crashing_functions_get_clear_errors(box: Box) -> None:
    with pytest.raises(BentoError, match="syntax error in main.py line 2"):
        await deploy(box, "def main():\n    return (\n", "syntax")
    with pytest.raises(BentoError, match="not a Python module name"):
        await box.deploy(b"x = 1", Manifest.model_construct(name="x", module="no such", description=""))

    broken = await deploy(box, BROKEN, "broken")
    with pytest.raises(BentoError, match="no entry point 'missing' .*fail, not_json, vanish"):
        await box.invoke(broken, "missing")

    output, ended = await run(box, broken, "fail", "on purpose")
    assert output == b"about to fail\n"
    assert ended.state is SessionState.ERROR and ended.error is not None
    assert ended.error.type == "ValueError" and ended.error.message == "on purpose"
    assert "raise ValueError(message)" in ended.error.traceback

    _, ended = await run(box, broken, "vanish", 3)
    assert ended.state is SessionState.ERROR and "exit status 3" in ended.reason

    _, ended = await run(box, broken, "not_json")
    assert ended.error is not None and ended.error.type == "TypeError" and "JSON" in ended.error.message

    # The box serves everyone else throughout.
    hello = await deploy(box, HELLO, "after-the-crashes")
    output, ended = await run(box, hello, "main")
    assert output == b"hello world\n" and ended.state is SessionState.COMPLETED
    await box.shutdown(broken)
    await box.shutdown(hello)


async def test_an_oversize_upload_is_refused_and_nothing_is_kept(box: Box) -> None:
    descriptor = await box.descriptor()
    limit = descriptor.policy.max_upload_bytes
    padding = "#" * (limit + 1)
    with pytest.raises(BentoError, match="at most"):
        await deploy(box, HELLO + padding, "too-big")


async def test_a_manifest_that_exceeds_the_policy_is_refused_with_every_violation(
    testnet: Testnet, box: Box, tmp_path: Path
) -> None:
    greedy = Manifest(
        name="greedy",
        needs=Needs(memory_mb=100_000, cpu_seconds=100_000, tor_circuits=1000, storage_mb=100_000),
    )
    expected = ["memory_mb", "cpu_seconds", "tor_circuits", "storage_mb"]
    # The client refuses before uploading...
    with pytest.raises(BentoError, match="would refuse") as caught:
        await box.deploy(HELLO.encode(), greedy)
    assert all(word in str(caught.value) for word in expected), caught.value
    # ...and the box refuses on its own, whatever the client does.
    body = {"manifest": greedy.model_dump(mode="json"), "kind": "module", "code": ""}
    with pytest.raises(BentoError, match="asks for more than this box's policy allows") as caught:
        await box._request("POST", "/v1/functions", UploadResponse, json=body)
    assert all(word in str(caught.value) for word in expected), caught.value

    descriptor = await box.descriptor()
    assert descriptor.policy.network.allowed and descriptor.runtime.isolation["syscalls"].startswith(
        "seccomp"
    )

    manifest = tmp_path / "greedy.toml"
    manifest.write_text('name = "greedy"\n[needs]\nmemory_mb = 100000\n')
    modest = tmp_path / "modest.toml"
    modest.write_text('name = "modest"\n[needs]\nmemory_mb = 64\nnetwork = true\n')
    env = {**os.environ, **testnet.environment()}

    def fits(path: Path) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "bento", "boxes", "--fits", str(path), "--json"],
            env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return sorted(b["nickname"] for b in json.loads(done.stdout))

    assert fits(manifest) == []
    assert fits(modest) == sorted(n.nickname for n in testnet.state.boxes)
