"""The operator of a testnet box, on its machine: list, kill, evict, pause and resume with
``bento box``, while its users reach the box over Tor."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from functions import ECHO, HELLO
from support import TIMEOUT, bento_cli, deploy, run

from bento.client.box import Box
from bento.errors import Busy, Refused
from bento.protocol.messages import SessionState
from bento.testnet import Node, Testnet
from plain_user import PlainUser, plain_user

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]


async def operator(testnet: Testnet, node: Node, tmp_path: Path, *args: str) -> Any:
    """``bento box ARGS --json`` for ``node``'s state directory, as its operator: the JSON."""
    assert node.bento_dir is not None
    status, out, err = await bento_cli(
        testnet, tmp_path / "keyring.json", "box", *args, "--state-dir", node.bento_dir, "--json"
    )
    assert status == 0, f"bento box {' '.join(args)} exited {status}: {out}{err}"
    return json.loads(out)


async def test_the_operator_sees_and_steers_the_box(
    testnet: Testnet, box_node: Node, box: Box, tmp_path: Path
) -> None:
    echo = await deploy(box, ECHO, "operator-echo")
    hello = await deploy(box, HELLO, "operator-hello")
    session_id = await box.invoke(echo, "upper")
    listed = await operator(testnet, box_node, tmp_path, "functions")
    row = next(f for f in listed["functions"] if f["function_id"] == echo.function_id)
    assert (row["name"], row["instances"]) == ("operator-echo", 1)
    assert echo.invocation_token not in json.dumps(listed)
    sessions = await operator(testnet, box_node, tmp_path, "sessions")
    mine = next(s for s in sessions["sessions"] if s["session_id"] == session_id)
    assert (mine["state"], mine["function_name"], mine["entry"]) == ("running", "operator-echo", "upper")

    killed = await operator(testnet, box_node, tmp_path, "kill", session_id)
    assert (killed["state"], killed["reason"]) == ("killed", "killed by the box's operator")
    info = await box.session(echo, session_id)
    assert info.state is SessionState.KILLED and info.reason == "killed by the box's operator"

    paused = await operator(testnet, box_node, tmp_path, "pause", "--uploads")
    assert paused == {"paused": ["uploads"]}
    try:
        with pytest.raises(Busy) as refused:
            await deploy(box, HELLO, "operator-refused")
        assert (
            refused.value.code == "box-paused" and refused.value.fix == "try again later, or use another box"
        )
        output, ended = await run(box, hello, "main", "paused")  # invocations still run
        assert ended.state is SessionState.COMPLETED and output == b"hello paused\n"
    finally:
        resumed = await operator(testnet, box_node, tmp_path, "resume")
    assert resumed == {"paused": []}
    await box.shutdown(await deploy(box, HELLO, "operator-resumed"))

    usage = await operator(testnet, box_node, tmp_path, "usage")
    assert usage["box"]["sessions_total"] >= 2 and usage["refusals"].get("box-paused", 0) >= 1

    running = await box.invoke(echo, "upper")
    evicted = await operator(testnet, box_node, tmp_path, "evict", echo.function_id)
    assert evicted == {"function_id": echo.function_id, "name": "operator-echo", "sessions_stopped": 1}
    with pytest.raises(Refused) as gone:
        await box.invoke(echo, "upper")
    assert gone.value.code == "function-evicted" and gone.value.status == 410
    assert (
        "operator evicted" in gone.value.message
        and gone.value.fix == "deploy it again, on this box or another"
    )
    assert running not in json.dumps(await operator(testnet, box_node, tmp_path, "sessions"))
    output, ended = await run(box, hello, "main", "operator")
    assert ended.state is SessionState.COMPLETED and output == b"hello operator\n", "its neighbour serves on"
    await box.shutdown(hello)


async def test_the_box_of_a_dedicated_user_is_steered_as_that_user(testnet: Testnet, tmp_path: Path) -> None:
    node = testnet.state.boxes[-1]
    if node.bento_user is None or node.bento_dir is None:
        pytest.skip("no box of this testnet runs as a dedicated user (the testnet runs unprivileged)")
    user = plain_user(node.bento_user)
    assert isinstance(user, PlainUser), user  # the box runs as that user: it can import Bento
    socket_path = Path(node.bento_dir) / "admin.sock"
    assert socket_path.stat().st_uid == user.uid and socket_path.stat().st_mode & 0o777 == 0o600

    process = await asyncio.create_subprocess_exec(
        *user.command("-m", "bento", "box", "functions", "--state-dir", node.bento_dir, "--json"),
        env=user.environment("/"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, err.decode()
    assert "functions" in json.loads(out)
