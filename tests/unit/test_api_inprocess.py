"""The HTTP API in process (no Tor): lifecycle, capabilities, refusals, limits, retention.

Sessions really run: each invocation starts a sandboxed instance (bubblewrap), as on a box.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from localbox import BOOT_ID, LocalBox, bearer, upload_body

from bento.protocol.descriptor import SignedDescriptor
from bento.protocol.messages import EndCause, SessionState
from bento.server import session as session_module
from bento.server import tokens

SOURCE = """
import time
from bento.runtime import api

def greet(name, punctuation="!"):
    api.send(f"hello {name}{punctuation}")
    return {"greeted": name}

def fail(message):
    raise ValueError(message)

def forever():
    api.send("started")
    time.sleep(120)

def _helper():
    pass

class NotAnEntry:
    def method(self):
        pass
"""


async def test_descriptor_is_signed_and_names_the_boot(box: LocalBox) -> None:
    response = await box.http.get("/v1/descriptor")
    assert response.status_code == 200
    signed = SignedDescriptor.model_validate_json(response.content)
    described = signed.verify()
    assert described.boot_id == BOOT_ID
    assert described.relay_fingerprint == "A" * 40
    assert described.policy == box.registry.config.policy
    assert described.runtime.isolation, "the descriptor says how this host confines instances"


async def test_upload_invoke_list_shutdown(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    assert function.entry_points == ["fail", "forever", "greet"]
    assert function.body["boot_id"] == BOOT_ID
    assert function.invocation_token != function.shutdown_token
    code_dir = box.registry.functions[function.function_id].code_dir
    assert (code_dir / "main.py").read_text() == SOURCE

    session_id = await box.invoke(function, "greet", "bento", punctuation="?")
    info = await box.wait_state(function, session_id)
    assert (info["state"], info["cause"], info["reason"]) == ("completed", "completed", ""), info["reason"]
    assert info["entry"] == "greet"
    assert info["usage"]["bytes_out"] == len(b"hello bento?")
    assert info["usage"]["cpu_seconds"] >= 0
    assert info["bytes_out"] == len(b"hello bento?")
    assert info["buffered"] == len(b"hello bento?")  # nobody attached, so nothing was acknowledged
    assert info["ended_at"] >= info["started_at"]
    session = box.registry.sessions[session_id]
    assert session.result == {"greeted": "bento"}

    sessions = f"/v1/functions/{function.function_id}/sessions"
    listed = await box.http.get(sessions, headers=function.invoke_auth)
    assert listed.status_code == 200
    assert listed.json() == {"function_id": function.function_id, "sessions": []}, "no right, no session"
    right = {"Bento-Session-Rights": function.session_rights[session_id]}
    for headers in ({**function.invoke_auth, **right}, function.shutdown_auth):  # its opener; the owner
        listed = await box.http.get(sessions, headers=headers)
        assert [s["session_id"] for s in listed.json()["sessions"]] == [session_id]

    stopped = await box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth)
    assert stopped.status_code == 200
    assert stopped.json() == {"function_id": function.function_id, "sessions_stopped": 0}
    assert not code_dir.parent.exists(), "shutdown deletes the function's code"

    again = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions",
        json={"entry": "greet"},
        headers=function.invoke_auth,
    )
    assert again.status_code == 404
    assert again.json()["code"] == "unknown-function"
    gone = await box.http.get(f"/v1/sessions/{session_id}", headers=function.invoke_auth)
    assert gone.status_code == 404
    assert gone.json()["code"] == "unknown-session"
    twice = await box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth)
    assert twice.status_code == 404


async def test_a_failing_function_ends_in_error_with_its_exception(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "fail", "no good")
    info = await box.wait_state(function, session_id)
    assert (info["state"], info["cause"], info["reason"]) == ("error", "error", "ValueError: no good")
    error = box.registry.sessions[session_id].error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "no good")
    assert "raise ValueError(message)" in error.traceback


async def test_wrong_arguments_end_in_a_type_error(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "greet", "a", "b", "c")
    assert (await box.wait_state(function, session_id))["state"] == "error"
    error = box.registry.sessions[session_id].error
    assert error is not None and error.type == "TypeError"


async def test_capabilities(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    other = await box.upload(SOURCE)
    sessions = f"/v1/functions/{function.function_id}/sessions"
    invoke = {"entry": "greet", "args": ["x"]}

    missing = await box.http.post(sessions, json=invoke)
    assert missing.status_code == 401
    assert missing.json()["code"] == "missing-token"
    for header in ({"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"Authorization": ""}):
        refused = await box.http.post(sessions, json=invoke, headers=header)
        assert refused.status_code == 401, header

    for token in ("x" * 43, function.shutdown_token, other.invocation_token, function.invocation_token + "x"):
        wrong = await box.http.post(sessions, json=invoke, headers=bearer(token))
        assert wrong.status_code == 403
        assert wrong.json()["code"] == "wrong-token"
        assert token not in wrong.text, "a token never appears in an error"
        listing = await box.http.get(sessions, headers=bearer(token))
        assert listing.status_code == (200 if token == function.shutdown_token else 403)

    not_shutdown = await box.http.delete(
        f"/v1/functions/{function.function_id}", headers=function.invoke_auth
    )
    assert not_shutdown.status_code == 403
    assert not_shutdown.json()["code"] == "wrong-token"
    assert function.function_id in box.registry.functions, "a refused shutdown changes nothing"

    # A session is guarded by its own right; its function's owner may read its state, nobody else.
    session_id = await box.invoke(function, "greet", "x")
    path = f"/v1/sessions/{session_id}"
    for token in (other.invocation_token, function.invocation_token, other.shutdown_token):
        assert (await box.http.get(path, headers=bearer(token))).status_code == 403
    assert (await box.http.get(path, headers=function.shutdown_auth)).status_code == 200
    assert (await box.http.get(f"{path}/logs", headers=function.shutdown_auth)).status_code == 403
    assert (await box.http.get(path, headers=bearer(function.session_rights[session_id]))).status_code == 200
    assert (await box.http.get(path)).status_code == 401
    await box.wait_state(function, session_id)

    # Scheme and surrounding spaces are lenient; the token itself is not.
    lenient = await box.http.get(
        sessions, headers={"Authorization": f"bearer   {function.invocation_token} "}
    )
    assert lenient.status_code == 200


async def test_tokens_are_kept_only_as_hashes(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    stored = box.registry.functions[function.function_id]
    assert stored.invocation_digest == tokens.digest(function.invocation_token)
    assert stored.shutdown_digest == tokens.digest(function.shutdown_token)
    held = repr(vars(stored))
    assert function.invocation_token not in held
    assert function.shutdown_token not in held


async def test_unknown_function_says_how_to_fix_it(box: LocalBox) -> None:
    for method in ("GET", "POST"):
        response = await box.http.request(
            method, "/v1/functions/nope/sessions", json={"entry": "main"}, headers=bearer("x")
        )
        assert response.status_code == 404
        body = response.json()
        assert body["code"] == "unknown-function"
        assert BOOT_ID in body["fix"], "the fix names the boot id, so a client can tell a restart"
    unknown_session = await box.http.get("/v1/sessions/nope", headers=bearer("x"))
    assert unknown_session.status_code == 404
    assert unknown_session.json()["code"] == "unknown-session"
    assert unknown_session.json()["fix"]


async def test_unknown_entry_lists_the_entry_points(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    for entry in ("_helper", "NotAnEntry", "time", "missing"):
        response = await box.http.post(
            f"/v1/functions/{function.function_id}/sessions",
            json={"entry": entry},
            headers=function.invoke_auth,
        )
        assert response.status_code == 404, entry
        body = response.json()
        assert body["code"] == "unknown-entry"
        assert "fail, forever, greet" in body["error"]
    assert not box.registry.sessions


@pytest.mark.parametrize(
    "body",
    [
        {"entry": "1abc"},
        {"entry": "greet", "args": "not a list"},
        {"entry": "greet", "kwargs": []},
        {"entry": "greet", "extra": 1},
        {},
    ],
)
async def test_malformed_invocations_are_refused(box: LocalBox, body: dict[str, Any]) -> None:
    function = await box.upload(SOURCE)
    response = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions", json=body, headers=function.invoke_auth
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid-request"
    assert not box.registry.sessions


async def test_syntax_error_is_refused_with_its_line(box: LocalBox) -> None:
    response = await box.http.post("/v1/functions", json=upload_body("def ok():\n    pass\n\ndef broken(:\n"))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "bad-code"
    assert "line 4" in body["error"]
    assert body["fix"]
    assert not list(box.registry.root.iterdir()), "nothing of a refused upload is kept"
    assert not box.registry.functions


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"manifest": {"name": ""}, "code": ""}, "manifest.name"),
        ({"manifest": {"name": "x", "module": "not-a-module"}, "code": ""}, "manifest.module"),
        ({"manifest": {"name": "x"}, "kind": "zip", "code": ""}, "kind"),
        ({"manifest": {"name": "x"}}, "code"),
        ({"manifest": {"name": "x", "secret": 1}, "code": ""}, "manifest.secret"),
    ],
)
async def test_malformed_uploads_name_the_field(box: LocalBox, body: dict[str, Any], field: str) -> None:
    response = await box.http.post("/v1/functions", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid-request"
    assert field in response.json()["error"]


@pytest.mark.parametrize("box_limits", [{"policy": {"max_upload_bytes": 1000}}])
async def test_oversize_uploads_are_refused(box: LocalBox) -> None:
    fits = await box.http.post("/v1/functions", json=upload_body("x = 1\n" + "#" * 990))
    assert fits.status_code == 201

    too_big = await box.http.post("/v1/functions", json=upload_body("#" * 1001))
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "upload-too-large"
    assert "1001" in too_big.json()["error"]

    # A body far over the limit is refused while it arrives, whether or not its length is declared.
    huge = b'{"manifest": {"name": "x"}, "code": "' + b"A" * (200 << 10) + b'"}'
    declared = await box.http.post("/v1/functions", content=huge)
    assert declared.status_code == 413
    assert declared.json()["code"] == "body-too-large"

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 4096):
            yield huge[start : start + 4096]

    streamed = await box.http.post("/v1/functions", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "body-too-large"


async def test_invocation_bodies_are_small(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    response = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions",
        json={"entry": "greet", "args": ["x" * (70 << 10)]},
        headers=function.invoke_auth,
    )
    assert response.status_code == 413
    assert response.json()["code"] == "body-too-large"


async def test_shutdown_kills_running_sessions(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "forever")
    await box.wait_state(function, session_id, ended=False)
    session = box.registry.sessions[session_id]
    assert (await box.session_info(function, session_id))["state"] == "running"

    started = time.monotonic()
    stopped = await box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth)
    assert stopped.status_code == 200
    assert stopped.json()["sessions_stopped"] == 1
    assert time.monotonic() - started < 10
    assert (session.state, session.cause) == (SessionState.KILLED, EndCause.SHUTDOWN)
    assert session.reason == "its function was shut down"
    assert session.instance is not None and session.instance.process.returncode is not None


@pytest.mark.parametrize("box_limits", [{"policy": {"instances_total": 1}}])
async def test_a_full_box_refuses_more_sessions(box: LocalBox) -> None:
    function, other = await box.upload(SOURCE), await box.upload(SOURCE)
    first = await box.invoke(function, "forever")
    refused = await box.http.post(
        f"/v1/functions/{other.function_id}/sessions", json={"entry": "forever"}, headers=other.invoke_auth
    )
    assert refused.status_code == 503
    assert refused.json()["code"] == "box-full"
    assert refused.json()["fix"]
    await box.wait_state(function, first, ended=False)
    await box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth)
    # Ended sessions do not count.
    for _ in range(2):
        await box.wait_state(other, await box.invoke(other, "greet", "x"))


@pytest.mark.parametrize("box_limits", [{"policy": {"total_memory_mb": 300}}])
async def test_the_box_promises_no_more_memory_than_it_has(box: LocalBox) -> None:
    function = await box.upload(SOURCE, needs={"memory_mb": 200})
    small = await box.upload(SOURCE, needs={"memory_mb": 100})
    running = await box.invoke(function, "forever")
    refused = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions",
        json={"entry": "forever"},
        headers=function.invoke_auth,
    )
    assert refused.status_code == 503
    assert refused.json()["code"] == "box-full"
    assert "200 MB of 300 MB" in refused.json()["error"]
    fits = await box.invoke(small, "greet", "x")  # 200 + 100 <= 300
    await box.wait_state(small, fits)
    await box.wait_state(function, running, ended=False)


async def test_a_function_runs_at_most_the_instances_it_asked_for(box: LocalBox) -> None:
    function = await box.upload(SOURCE, needs={"instances": 1})
    first = await box.invoke(function, "forever")
    busy = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions",
        json={"entry": "greet"},
        headers=function.invoke_auth,
    )
    assert busy.status_code == 503
    assert busy.json()["code"] == "function-busy"
    assert busy.json()["fix"]
    await box.wait_state(function, first, ended=False)


@pytest.mark.parametrize(
    ("needs", "named"),
    [
        ({"memory_mb": 100_000}, "memory_mb"),
        ({"wall_seconds": 10**6}, "wall_seconds"),
        ({"network": True}, "network"),
        ({"onion_services": 1}, "onion_services"),
        ({"syscall_profiles": ["network"]}, "syscall profile 'network'"),
        ({"storage_mb": 1}, "storage_mb"),
    ],
)
async def test_a_manifest_beyond_the_policy_is_refused(
    box: LocalBox, needs: dict[str, Any], named: str
) -> None:
    response = await box.http.post("/v1/functions", json=upload_body(SOURCE, needs=needs))
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "exceeds-policy"
    assert named in body["error"]
    assert body["fix"]
    assert not box.registry.functions
    assert not list(box.registry.root.iterdir())


async def test_malformed_needs_are_invalid_requests(box: LocalBox) -> None:
    for needs in ({"memory_mb": 1}, {"gpu": True}, {"syscall_profiles": ["everything"]}):
        response = await box.http.post("/v1/functions", json=upload_body(SOURCE, needs=needs))
        assert response.status_code == 422, needs
        assert response.json()["code"] == "invalid-request"
        assert "manifest.needs" in response.json()["error"]


async def test_wall_clock_limit_kills_the_session(box: LocalBox) -> None:
    function = await box.upload(SOURCE, needs={"wall_seconds": 1})
    session_id = await box.invoke(function, "forever")
    info = await box.wait_state(function, session_id)
    assert (info["state"], info["cause"]) == ("killed", "wall")
    assert "wall-clock" in info["reason"]
    assert info["bytes_out"] == len(b"started"), "output sent before the kill is kept"


@pytest.mark.parametrize("box_limits", [{"session_retention_seconds": 60}])
async def test_ended_sessions_are_forgotten_after_the_retention_time(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    running = await box.invoke(function, "forever")
    ended = await box.invoke(function, "greet", "x")
    await box.wait_state(function, ended)
    box.registry.reap(now=time.time() + 30)  # within the retention time: kept
    assert (await box.http.get(f"/v1/sessions/{ended}", headers=function.shutdown_auth)).status_code == 200
    box.registry.reap(now=time.time() + 61)
    gone = await box.http.get(f"/v1/sessions/{ended}", headers=function.shutdown_auth)
    assert (gone.status_code, gone.json()["code"]) == (410, "session-expired"), gone.text
    listed = await box.http.get(
        f"/v1/functions/{function.function_id}/sessions", headers=function.shutdown_auth
    )
    assert [s["session_id"] for s in listed.json()["sessions"]] == [running], "running sessions stay"


async def test_newly_started_box_forgets_everything(box: LocalBox) -> None:
    """A restart: new registry over the same state dir. Functions and their code are gone."""
    function = await box.upload(SOURCE)
    code_dir = box.registry.functions[function.function_id].code_dir
    assert code_dir.exists()
    box.registry.reset_storage()  # what the daemon does at start-up
    assert not code_dir.exists()
    assert list(box.registry.root.iterdir()) == []


async def test_output_over_the_limit_kills_the_session_at_once(box: LocalBox) -> None:
    function = await box.upload(
        "from bento.runtime import api\ndef spew():\n    while True:\n        api.send(bytes(65536))\n",
        needs={"output_mb": 1, "wall_seconds": 3},
    )
    session_id = await box.invoke(function, "spew")
    info = await box.wait_state(function, session_id, timeout=10)
    assert (info["state"], info["cause"]) == ("killed", "output"), info["reason"]
    assert info["ended_at"] - info["started_at"] < 2, (
        "killed when it crossed the limit, not at the wall clock"
    )


# --- known bugs: these describe the intended behaviour and fail today -------------------------


@pytest.mark.parametrize("code", ["not base64!", "QUJ", "ÄÖÜ"])
async def test_code_that_is_not_base64_is_refused(box: LocalBox, code: str) -> None:
    response = await box.http.post("/v1/functions", json={"manifest": {"name": "x"}, "code": code})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid-request"  # the schema's pattern says what base64 is
    assert "code: String should match pattern" in response.json()["error"]
    assert not list(box.registry.root.iterdir())


async def test_invoke_racing_a_shutdown_starts_no_orphan_session(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    reading, release = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"entry": '
        reading.set()
        await release.wait()
        yield b'"forever"}'

    invoking = asyncio.create_task(
        box.http.post(
            f"/v1/functions/{function.function_id}/sessions",
            content=slow_body(),
            headers=function.invoke_auth,
        )
    )
    await asyncio.wait_for(reading.wait(), 5)
    stopped = await box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth)
    assert stopped.status_code == 200
    release.set()
    response = await invoking
    running = [s for s in box.registry.sessions.values() if not s.ended]
    assert response.status_code == 404, f"{response.status_code}: {response.text}"
    assert running == []


LINGER = (
    "import threading, time\n"
    "def linger():\n"
    "    threading.Thread(target=time.sleep, args=(60,)).start()\n"
    "    return 'returned'\n"
)


async def test_shutdown_leaves_no_process_behind(box: LocalBox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function that returns but leaves a (non-daemon) thread running is still stopped by shutdown.

    The grace an instance gets to exit after returning is made longer than the test, so that
    only the shutdown can be what stops it: the shutdown finds it running and stops it.
    """
    monkeypatch.setattr(session_module, "RETURN_GRACE", 3600.0)
    function = await box.upload(LINGER)
    session_id = await box.invoke(function, "linger")
    session = box.registry.sessions[session_id]
    await box.wait_state(function, session_id, ended=False)
    await asyncio.wait_for(session.answered.wait(), 15)  # it has returned; its process lingers
    assert not session.ended
    instance = session.instance
    assert instance is not None and instance.process.returncode is None
    stopped = await asyncio.wait_for(
        box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth), 10
    )
    assert (stopped.status_code, stopped.json()["sessions_stopped"]) == (200, 1)
    assert session.ended and session.result == "returned", "it had answered: its answer stands"
    assert instance.process.returncode is not None, "the function's process is gone"


async def test_a_returned_function_ends_its_session_promptly(box: LocalBox) -> None:
    function = await box.upload(LINGER)
    session_id = await box.invoke(function, "linger")
    info = await box.wait_state(function, session_id, timeout=3)
    assert (info["state"], box.registry.sessions[session_id].result) == ("completed", "returned")


async def test_a_malformed_result_frame_is_a_protocol_violation(box: LocalBox) -> None:
    function = await box.upload(
        "import time\n"
        "from bento.protocol.frames import Frame\n"
        "from bento.runtime import api\n"
        "def forge():\n"
        "    api._get().send(Frame.RESULT, b'[1]')\n"
        "    time.sleep(60)\n"
    )
    session_id = await box.invoke(function, "forge")
    info = await box.wait_state(function, session_id, timeout=10)
    assert (info["state"], info["cause"]) == ("killed", "policy"), info["reason"]
