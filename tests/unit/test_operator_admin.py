"""The operator's admin socket on an in-process box: every operation, and who may connect."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from localbox import LocalBox, Uploaded

from bento.server.admin.socket_api import admin_socket

SOURCE = """\
from bento.runtime import api


def forever():
    api.send("started\\n")
    while (data := api.recv()) is not None:
        api.send(data)


def save(value):
    api.storage.put("k", value.encode())
    return "saved"


def quick():
    return 1
"""
STORAGE = {"policy": {"storage": {"allowed": True, "max_mb": 2}}}
DEDICATED_USER = "bento-e2e"  # a second local user the test machine has (tests/conftest.py)
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's may not be open to that user


@pytest.fixture
async def admin(box: LocalBox) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the box's real admin socket, over the Unix socket itself."""
    async with admin_socket(box.registry, box.registry.config.state_dir) as path:
        transport = httpx.AsyncHTTPTransport(uds=str(path))
        async with httpx.AsyncClient(transport=transport, base_url="http://box", timeout=30) as client:
            yield client


async def _running(box: LocalBox, function: Uploaded) -> str:
    session_id = await box.invoke(function, "forever")
    await box.wait_state(function, session_id, ended=False)
    await box.registry.sessions[session_id].output.read(0)  # it has sent its first line
    return session_id


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_the_operator_lists_functions_and_sessions_without_their_tokens(
    box: LocalBox, admin: httpx.AsyncClient
) -> None:
    counter = await box.upload(SOURCE, name="counter", needs={"storage_mb": 1})
    idle = await box.upload(SOURCE, name="idle")
    saved = await box.invoke(counter, "save", "12345")
    assert (await box.wait_state(counter, saved))["state"] == "completed"
    session_id = await _running(box, counter)
    await box.registry.sessions[session_id].send_input(b"ping")

    listed = await admin.get("/v1/functions")
    assert listed.status_code == 200, listed.text
    rows = {row["function_id"]: row for row in listed.json()["functions"]}
    assert set(rows) == {counter.function_id, idle.function_id}
    mine = rows[counter.function_id]
    assert (mine["name"], mine["instances"], mine["sessions"]) == ("counter", 1, 2)
    assert mine["storage_bytes"] == len("12345") + len("k") and mine["storage_quota_bytes"] == 1 << 20
    assert rows[idle.function_id]["instances"] == 0 and rows[idle.function_id]["storage_bytes"] == 0

    sessions = (await admin.get("/v1/sessions")).json()["sessions"]
    running = next(s for s in sessions if s["session_id"] == session_id)
    assert (running["state"], running["function_name"], running["entry"]) == ("running", "counter", "forever")
    assert running["bytes_in"] == 4
    ended = next(s for s in sessions if s["session_id"] == saved)
    assert ended["state"] == "completed" and ended["cpu_seconds"] > 0 and ended["peak_memory_bytes"] > 0

    everything = listed.text + (await admin.get("/v1/sessions")).text + (await admin.get("/v1/usage")).text
    for function in (counter, idle):
        assert function.invocation_token not in everything and function.shutdown_token not in everything
    await admin.post(f"/v1/sessions/{session_id}/kill")


async def test_usage_counts_the_box_and_each_function(box: LocalBox, admin: httpx.AsyncClient) -> None:
    function = await box.upload(SOURCE, name="echo", needs={"memory_mb": 64})
    done = await box.invoke(function, "quick")
    await box.wait_state(function, done)
    session_id = await _running(box, function)
    await box.registry.sessions[session_id].send_input(b"hello")
    await box.registry.sessions[session_id].output.read(len(b"started\n"))  # its echo is back

    usage = (await admin.get("/v1/usage")).json()
    assert usage["box"]["instances"] == 1 and usage["box"]["sessions_total"] == 2
    assert usage["box"]["cpu_seconds_total"] > 0, "the ended session's CPU time is booked"
    assert usage["box"]["bytes_in_total"] == 5 and usage["box"]["bytes_out_total"] == len(b"started\nhello")
    assert usage["box"]["memory_bytes"] == 64 << 20
    (echo,) = usage["functions"]
    assert (echo["name"], echo["instances"], echo["sessions_total"], echo["bytes_in_total"]) == (
        "echo",
        1,
        2,
        5,
    )
    assert usage["paused"] == [] and usage["instances_limit"] == box.registry.policy.instances_total
    await admin.post(f"/v1/sessions/{session_id}/kill")


async def test_the_operator_kills_one_session(box: LocalBox, admin: httpx.AsyncClient) -> None:
    function = await box.upload(SOURCE)
    victim, other = await _running(box, function), await _running(box, function)

    killed = await admin.post(f"/v1/sessions/{victim}/kill")
    assert killed.status_code == 200, killed.text
    assert (killed.json()["state"], killed.json()["reason"]) == ("killed", "killed by the box's operator")
    info = await box.session_info(function, victim)
    assert info["reason"] == "killed by the box's operator", "its client is told who killed it"
    assert (await box.session_info(function, other))["state"] == "running", "its neighbour goes on"

    unknown = await admin.post(f"/v1/sessions/{'0' * 32}/kill")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown-session"
    assert "bento box sessions" in unknown.json()["fix"]
    await admin.post(f"/v1/sessions/{other}/kill")


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_an_evicted_function_is_gone_and_its_clients_are_told_why(
    box: LocalBox, admin: httpx.AsyncClient
) -> None:
    function = await box.upload(SOURCE, name="evictee", needs={"storage_mb": 1})
    neighbour = await box.upload(SOURCE, name="neighbour")
    saved = await box.invoke(function, "save", "x")
    await box.wait_state(function, saved)
    session_id = await _running(box, function)
    storage_dir = box.registry.config.state_dir / "storage" / function.function_id
    code_dir = box.registry.functions[function.function_id].code_dir
    assert storage_dir.exists() and code_dir.exists()

    evicted = await admin.post(f"/v1/functions/{function.function_id}/evict")
    assert evicted.status_code == 200, evicted.text
    assert evicted.json() == {"function_id": function.function_id, "name": "evictee", "sessions_stopped": 1}
    assert not storage_dir.exists() and not code_dir.exists(), "its code and storage are deleted"
    session = box.registry.sessions.get(session_id)
    assert session is None, "its sessions are gone with it"

    for response in (
        await box.http.post(
            f"/v1/functions/{function.function_id}/sessions",
            json={"entry": "quick"},
            headers=function.invoke_auth,
        ),
        await box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth),
    ):
        assert response.status_code == 410, response.text
        body = response.json()
        assert body["code"] == "function-evicted" and "operator evicted" in body["error"]
        assert "deploy it again" in body["fix"]
    still = await box.invoke(neighbour, "quick")
    assert (await box.wait_state(neighbour, still))["state"] == "completed", "the neighbour still serves"
    again = await admin.post(f"/v1/functions/{function.function_id}/evict")
    assert again.status_code == 404 and again.json()["code"] == "unknown-function"


async def test_pause_refuses_new_uploads_and_invocations_until_resumed(
    box: LocalBox, admin: httpx.AsyncClient
) -> None:
    function = await box.upload(SOURCE)
    running = await _running(box, function)

    paused = await admin.post("/v1/pause", json={"what": ["uploads"]})
    assert paused.json() == {"paused": ["uploads"]}
    refused = await box.http.post("/v1/functions", json={"manifest": {"name": "x"}, "code": ""})
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "box-paused" and "paused new uploads" in refused.json()["error"]
    assert refused.json()["fix"] == "try again later, or use another box"
    sent = 0

    async def body() -> AsyncIterator[bytes]:  # handed to the box only as it reads
        nonlocal sent
        for _ in range(8):
            sent += 1
            yield b" " * 1024

    unread = await box.http.post(
        "/v1/functions", content=body(), headers={"content-type": "application/json"}
    )
    assert unread.status_code == 503 and unread.json()["code"] == "box-paused", unread.text
    assert sent == 0, "refused before a byte of the upload was read"
    assert (await box.wait_state(function, await box.invoke(function, "quick")))["state"] == "completed"

    assert (await admin.post("/v1/pause")).json() == {"paused": ["uploads", "invocations"]}, "both by default"
    invoked = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions",
        json={"entry": "quick"},
        headers=function.invoke_auth,
    )
    assert invoked.status_code == 503 and invoked.json()["code"] == "box-paused"
    assert (await box.session_info(function, running))["state"] == "running", "running sessions go on"

    assert (await admin.post("/v1/resume", json={"what": ["invocations"]})).json() == {"paused": ["uploads"]}
    assert (await box.wait_state(function, await box.invoke(function, "quick")))["state"] == "completed"
    assert (await admin.post("/v1/resume")).json() == {"paused": []}
    assert (await box.upload(SOURCE)).function_id
    await admin.post(f"/v1/sessions/{running}/kill")


async def test_admin_requests_are_strict(box: LocalBox, admin: httpx.AsyncClient) -> None:
    for body in (
        {"what": ["everything"]},
        {"what": []},
        {"what": ["uploads"], "also": 1},
        {"what": "uploads"},
    ):
        refused = await admin.post("/v1/pause", json=body)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid-request", body
    huge = await admin.post("/v1/pause", content=b"x" * 10_000)
    assert huge.status_code == 413
    assert box.registry.controls.paused == set(), "nothing was paused by a bad request"
    assert (await admin.get("/v1/pause")).status_code == 405


async def test_the_socket_is_the_server_user_s_alone(box: LocalBox) -> None:
    state_dir = box.registry.config.state_dir
    async with admin_socket(box.registry, state_dir) as path:
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
        assert not [p for p in state_dir.iterdir() if p.name.startswith(".admin.sock")], (
            "no private name left"
        )
    assert not path.exists(), "the socket goes with the server"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to act as another user"
)
async def test_another_local_user_cannot_connect(box: LocalBox) -> None:
    state_dir = box.registry.config.state_dir
    async with admin_socket(box.registry, state_dir) as path:
        # Open the way to the socket (the state directory is 0700), so the socket's own mode decides.
        for directory in (path.parent, *path.parent.parents):
            if directory == Path("/"):
                break
            directory.chmod(directory.stat().st_mode | 0o001)
        probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
        process = await asyncio.create_subprocess_exec(
            "runuser", "-u", DEDICATED_USER, "--", SYSTEM_PYTHON, "-c", probe, str(path),
            stderr=subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode != 0 and b"PermissionError" in stderr, stderr
