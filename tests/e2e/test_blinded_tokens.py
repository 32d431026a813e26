"""Blinded tokens over Tor: the owner hands out single-use capabilities; each works once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from functions import HELLO
from stem import StreamStatus
from stem.control import EventType
from stem.response.events import StreamEvent
from support import TIMEOUT, deploy

from bento.client import Box, blind_tokens
from bento.testnet import Testnet
from bento.tor import control

T = TypeVar("T")

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]


def test_handed_out_capabilities_invoke_once_and_shut_down_once(testnet: Testnet, tmp_path: Path) -> None:
    source = tmp_path / "hello.py"
    source.write_text(HELLO)
    owner = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "owner.json")}
    # The holder has no keyring entry for the function: only what the owner handed over.
    holder = {**owner, "BENTO_KEYRING": str(tmp_path / "holder.json")}

    def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bento", *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
        )

    def cli_json(env: dict[str, str], *args: str) -> Any:
        done = cli(env, *args, "--json")
        assert done.returncode == 0, f"bento {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return json.loads(done.stdout)

    deployed = cli_json(owner, "deploy", str(source), "--box", "exit1", "--name", "shared")
    issued = cli_json(owner, "tokens", "shared", "--count", "2")
    first, second = issued["capabilities"]
    assert first.startswith("bento:invoke:") and first != second
    [stop] = cli_json(owner, "tokens", "shared", "--right", "shutdown")["capabilities"]

    used = cli(holder, "invoke", first, "main", '"holder"')
    assert used.returncode == 0, used.stderr
    assert used.stdout == "hello holder\n"
    again = cli(holder, "invoke", first, "main")
    assert again.returncode == 1 and "used already" in again.stderr, again.stderr
    assert cli(holder, "invoke", second, "main").returncode == 0
    assert (
        not (tmp_path / "holder.json").exists()
        or deployed["function_id"] not in (tmp_path / "holder.json").read_text()
    )

    refused = cli(holder, "shutdown", first)  # an invocation right does not shut down
    assert refused.returncode == 1, refused.stderr
    stopped = cli_json(holder, "shutdown", stop)
    assert stopped["function_id"] == deployed["function_id"]
    gone = cli(owner, "invoke", "shared", "main")
    assert gone.returncode == 1 and "shut down" in gone.stderr, gone.stderr


async def test_each_right_reaches_the_box_on_a_circuit_of_its_own(testnet: Testnet, box: Box) -> None:
    """The box cannot tell which signing gave a spent token, nor that two tokens have one
    holder, by the circuit they came on: each right's first request opens a stream on a new one."""
    onion = f"{box.onion}.onion"
    streams: list[str] = []  # the circuit of each stream the client's tor opened to the box

    def on_stream(event: StreamEvent) -> None:
        if event.status == StreamStatus.SUCCEEDED and event.target_address == onion and event.circ_id:
            streams.append(event.circ_id)

    async def circuit_of(step: Awaitable[T], what: str) -> tuple[T, str]:
        before = len(streams)
        result = await step
        deadline = time.monotonic() + 30  # tor reports the stream before the box's answer comes
        while len(streams) == before:
            assert time.monotonic() < deadline, f"{what} opened no stream: it used another right's"
            await asyncio.sleep(0.05)
        [circuit] = set(streams[before:])
        return result, circuit

    with control.connect(testnet.control_address) as ctl:
        ctl.add_event_listener(on_stream, EventType.STREAM)  # type: ignore[no-untyped-call]
        deployment = await deploy(box, HELLO, "unlinkable")
        tokens, issued = await circuit_of(blind_tokens.obtain(box, deployment, "invoke", 2), "obtaining")
        spent = [
            (await circuit_of(box.invoke(blind_tokens.with_token(deployment, token), "main"), "a spend"))[1]
            for token in tokens
        ]
    assert len({issued, *spent}) == 3, "a token was spent on the circuit of its signing, or of another"
    await box.shutdown(deployment)
