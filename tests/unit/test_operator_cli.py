"""``bento box``: the operator's commands against a real admin socket of an in-process box."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from localbox import LocalBox

from bento.server.admin.socket_api import admin_socket
from plain_user import plain_user

SOURCE = """\
from bento.runtime import api


def forever():
    while api.recv() is not None:
        pass
"""


async def bento(*args: str, runner: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``bento ARGS`` in a process of its own (the box serves on in this one's loop)."""
    command = [*(runner or [sys.executable]), "-m", "bento", *args]
    path = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    # Tables as wide as a pipe gets them (bento.cli.output): whatever width the runner sets
    # (a pytest-xdist worker has COLUMNS=80) would cut the ids that the tests look for.
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "140"}
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())


@pytest.fixture
async def state_dir(box: LocalBox) -> AsyncIterator[Path]:
    """The box's state directory, with its admin socket served."""
    async with admin_socket(box.registry, box.registry.config.state_dir):
        yield box.registry.config.state_dir


async def test_the_operator_lists_kills_evicts_pauses_and_resumes(box: LocalBox, state_dir: Path) -> None:
    function = await box.upload(SOURCE, name="watched")
    session_id = await box.invoke(function, "forever")
    await box.wait_state(function, session_id, ended=False)

    listed = await bento("box", "functions", "--state-dir", str(state_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["functions"]
    assert (row["function_id"], row["name"], row["instances"]) == (function.function_id, "watched", 1)
    table = await bento("box", "functions", "--state-dir", str(state_dir))
    assert "watched" in table.stdout and function.function_id in table.stdout
    sessions = json.loads((await bento("box", "sessions", "--state-dir", str(state_dir), "--json")).stdout)
    assert [s["session_id"] for s in sessions["sessions"]] == [session_id]
    usage = json.loads((await bento("box", "usage", "--state-dir", str(state_dir), "--json")).stdout)
    assert usage["box"]["instances"] == 1 and usage["functions"][0]["name"] == "watched"
    assert "watched" in (await bento("box", "usage", "--state-dir", str(state_dir))).stdout

    killed = await bento("box", "kill", session_id, "--state-dir", str(state_dir))
    assert killed.returncode == 0 and "killed by the box's operator" in killed.stdout, killed.stderr
    assert box.registry.sessions[session_id].state.value == "killed"

    config = state_dir.parent / "server.toml"
    config.write_text(f'state_dir = "{state_dir}"\n')  # the file `bento server --config` reads
    paused = await bento("box", "pause", "--uploads", "--config", str(config))
    assert paused.returncode == 0 and "paused: uploads" in paused.stdout, paused.stderr
    assert box.registry.controls.paused == {"uploads"}
    resumed = await bento("box", "resume", "--config", str(config), "--json")
    assert json.loads(resumed.stdout) == {"paused": []} and box.registry.controls.paused == set()

    evicted = await bento("box", "evict", function.function_id, "--state-dir", str(state_dir))
    assert evicted.returncode == 0 and "evicted watched" in evicted.stdout, evicted.stderr
    assert function.function_id not in box.registry.functions
    again = await bento("box", "evict", function.function_id, "--state-dir", str(state_dir), "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["error"]["code"] == "unknown-function"


async def test_a_bad_id_is_refused_before_it_is_sent(box: LocalBox, state_dir: Path) -> None:
    refused = await bento("box", "kill", "../functions", "--state-dir", str(state_dir))
    assert refused.returncode == 1 and "is not an id" in refused.stderr
    assert "fix: copy it from `bento box functions`" in refused.stderr


async def test_no_socket_and_a_stale_socket_are_clear_errors(tmp_path: Path) -> None:
    missing = await bento("box", "functions", "--state-dir", str(tmp_path))
    assert missing.returncode == 1 and f"no admin socket at {tmp_path / 'admin.sock'}" in missing.stderr
    assert "fix: is `bento server` running with this state directory?" in missing.stderr
    as_json = await bento("box", "usage", "--state-dir", str(tmp_path), "--json")
    assert json.loads(as_json.stdout)["error"]["message"].startswith("no admin socket")

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "admin.sock"))  # bound, never listening: what a killed server leaves
    try:
        left = await bento("box", "sessions", "--state-dir", str(tmp_path))
    finally:
        stale.close()
    assert left.returncode == 1 and "cannot connect to the admin socket" in left.stderr
    assert "the server is not running" in left.stderr


async def test_another_user_is_told_to_run_it_as_the_box_s_user(box: LocalBox, state_dir: Path) -> None:
    user = plain_user()  # a second local user the test machine has (tests/conftest.py)
    if isinstance(user, str):
        pytest.skip(user)
    for directory in (state_dir, *state_dir.parents):  # the way is open: the socket's mode decides
        if directory != Path("/"):
            directory.chmod(directory.stat().st_mode | 0o001)
    drop = user.command()
    refused = await bento("box", "functions", "--state-dir", str(state_dir), runner=drop)
    assert refused.returncode == 1, refused.stderr
    assert f"permission denied on the admin socket {state_dir / 'admin.sock'}" in refused.stderr
    assert "fix: run this as the box's user" in refused.stderr
