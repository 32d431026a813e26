"""The session WebSocket in process: events, acknowledgements, re-attach, backpressure.

Synchronous tests: Starlette's TestClient runs the app (and so the sessions) on its own
event loop in a thread. End-to-end streaming over Tor is covered by tests/e2e.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from localbox import local_registry, upload_body

with warnings.catch_warnings():  # Starlette would rather the test client used httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from bento.server.api import create_app
from bento.server.registry import Registry

SOURCE = """
import time
from bento.runtime import api

def echo():
    api.send("hello")
    count = 0
    while (data := api.recv()) is not None:
        count += 1
        api.send(data.upper())
    return {"messages": count}

def two_parts():
    api.send("0123")
    api.send("456789")
    return 10

def flood(total, piece):
    for start in range(0, total, piece):
        api.send(bytes((start // piece) % 256 for _ in range(piece)))
    return total

def forever():
    api.send("started")
    time.sleep(120)

def fail():
    api.send("partial")
    raise RuntimeError("it broke")
"""


class SyncBox:
    def __init__(self, client: TestClient, registry: Registry) -> None:
        self.client = client
        self.registry = registry
        response = client.post("/v1/functions", json=upload_body(SOURCE))
        assert response.status_code == 201, response.text
        self.function = response.json()
        self.auth = {"Authorization": f"Bearer {self.function['invocation_token']}"}

    def invoke(self, entry: str, *args: Any) -> str:
        response = self.client.post(
            f"/v1/functions/{self.function['function_id']}/sessions",
            json={"entry": entry, "args": list(args)},
            headers=self.auth,
        )
        assert response.status_code == 201, response.text
        session_id: str = response.json()["session_id"]
        return session_id

    def info(self, session_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/sessions/{session_id}", headers=self.auth)
        assert response.status_code == 200, response.text
        info: dict[str, Any] = response.json()
        return info

    def wait(self, session_id: str, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not predicate(info := self.info(session_id)):
            assert time.monotonic() < deadline, f"timed out; last state {info}"
            time.sleep(0.02)
        return info

    def stream(self, session_id: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else self.auth
        return self.client.websocket_connect(f"/v1/sessions/{session_id}/stream", headers=headers)


def _ended(info: dict[str, Any]) -> bool:
    return bool(info["state"] != "running")


def _read_until_end(ws: Any) -> tuple[bytes, dict[str, Any]]:
    """Every output byte up to the Ended event, and that event."""
    data = bytearray()
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            data += message["bytes"]
            continue
        event = json.loads(message["text"])
        assert event["type"] == "end", event
        return bytes(data), event


@pytest.fixture
def sync_box(request: pytest.FixtureRequest) -> Iterator[SyncBox]:
    limits = getattr(request, "param", {})
    with (
        local_registry(**limits) as (registry, signed),
        TestClient(create_app(registry, lambda: signed)) as client,
    ):
        assert client.portal is not None
        with client.portal.wrap_async_context_manager(registry.running()):
            yield SyncBox(client, registry)


def test_stream_carries_bytes_both_ways_and_ends_with_the_result(sync_box: SyncBox) -> None:
    session_id = sync_box.invoke("echo")
    with sync_box.stream(session_id) as ws:
        assert json.loads(ws.receive_text()) == {"type": "attached", "offset": 0}
        assert ws.receive_bytes() == b"hello"
        ws.send_text(json.dumps({"type": "ack", "offset": 5}))
        ws.send_bytes(b"abc")
        assert ws.receive_bytes() == b"ABC"
        ws.send_text(json.dumps({"type": "something-newer", "x": 1}))  # unknown events are ignored
        ws.send_bytes(b"xyz")
        assert ws.receive_bytes() == b"XYZ"
        ws.send_text(json.dumps({"type": "eof"}))
        rest, end = _read_until_end(ws)
        assert rest == b""
        usage = end.pop("usage")
        assert end == {
            "type": "end",
            "state": "completed",
            "cause": "completed",
            "result": {"messages": 2},
            "error": None,
            "reason": "",
        }
        assert (usage["bytes_in"], usage["bytes_out"]) == (6, 11)
    info = sync_box.info(session_id)
    assert (info["bytes_in"], info["bytes_out"]) == (6, 11)
    assert not info["attached"]


def test_reattach_resumes_after_the_last_acknowledged_byte(sync_box: SyncBox) -> None:
    session_id = sync_box.invoke("two_parts")
    sync_box.wait(session_id, _ended)

    with sync_box.stream(session_id) as ws:
        assert json.loads(ws.receive_text())["offset"] == 0
        data, end = _read_until_end(ws)
        assert data == b"0123456789"
        assert (end["state"], end["result"]) == ("completed", 10)
        ws.send_text(json.dumps({"type": "ack", "offset": 4}))  # the client kept only "0123"
    sync_box.wait(session_id, lambda i: i["buffered"] == 6 and not i["attached"])

    with sync_box.stream(session_id) as ws:
        assert json.loads(ws.receive_text()) == {"type": "attached", "offset": 4}
        data, end = _read_until_end(ws)
        assert data == b"456789", "exactly the unacknowledged bytes, in order"
        assert end["result"] == 10
        ws.send_text(json.dumps({"type": "ack", "offset": 10}))
    sync_box.wait(session_id, lambda i: i["buffered"] == 0 and not i["attached"])

    with sync_box.stream(session_id) as ws:
        assert json.loads(ws.receive_text()) == {"type": "attached", "offset": 10}
        assert _read_until_end(ws)[0] == b""


def test_the_newest_attachment_wins(sync_box: SyncBox) -> None:
    session_id = sync_box.invoke("forever")
    with sync_box.stream(session_id) as first:
        assert json.loads(first.receive_text())["type"] == "attached"
        assert first.receive_bytes() == b"started"
        with sync_box.stream(session_id) as second:
            assert json.loads(second.receive_text()) == {"type": "attached", "offset": 0}
            assert second.receive_bytes() == b"started", "nothing was acknowledged, so it comes again"
            closed = first.receive()
            assert (closed["type"], closed["code"]) == ("websocket.close", 4001)
            assert "another client attached" in closed["reason"]
            assert sync_box.info(session_id)["attached"]


def test_a_refused_stream_gets_an_error_body_then_a_policy_close(sync_box: SyncBox) -> None:
    session_id = sync_box.invoke("two_parts")
    for target, token, code in [
        (session_id, "wrong", "wrong-token"),
        (session_id, sync_box.function["shutdown_token"], "wrong-token"),
        ("no-such-session", None, "unknown-session"),
    ]:
        with sync_box.stream(target, token) as ws:
            error = ws.receive_json()
            assert error["code"] == code
            assert set(error) == {"error", "code", "fix"}
            closed = ws.receive()
            assert (closed["type"], closed["code"]) == ("websocket.close", 1008)
    sync_box.wait(session_id, _ended)


@pytest.mark.parametrize("sync_box", [{"session_buffer_bytes": 64 << 10}], indirect=True)
def test_an_absent_client_blocks_the_function_not_the_memory(sync_box: SyncBox) -> None:
    total, piece = 1 << 20, 16 << 10
    session_id = sync_box.invoke("flood", total, piece)
    output = sync_box.registry.sessions[session_id].output
    sync_box.wait(session_id, lambda i: output.blocked)  # the box holds the function's next send back
    info = sync_box.info(session_id)
    assert info["state"] == "running", "with nobody reading, the function waits in api.send()"
    assert info["buffered"] <= 64 << 10, "the box holds at most session_buffer_bytes of output"

    received = bytearray()
    with sync_box.stream(session_id) as ws:
        assert json.loads(ws.receive_text())["offset"] == 0
        while True:
            message = ws.receive()
            if message.get("bytes") is None:
                end = json.loads(message["text"])
                break
            received += message["bytes"]
            ws.send_text(json.dumps({"type": "ack", "offset": len(received)}))
    assert (end["state"], end["result"]) == ("completed", total)
    expected = b"".join(bytes([i % 256]) * piece for i in range(total // piece))
    assert received == expected


def test_an_exception_reaches_the_client_in_the_ended_event(sync_box: SyncBox) -> None:
    session_id = sync_box.invoke("fail")
    with sync_box.stream(session_id) as ws:
        assert json.loads(ws.receive_text())["type"] == "attached"
        data, end = _read_until_end(ws)
    assert data == b"partial", "output sent before the exception is delivered"
    assert (end["state"], end["cause"], end["result"]) == ("error", "error", None)
    assert end["error"]["type"] == "RuntimeError"
    assert end["error"]["message"] == "it broke"
    assert 'raise RuntimeError("it broke")' in end["error"]["traceback"]
    assert end["reason"] == "RuntimeError: it broke"


def test_an_attached_client_sees_its_session_killed_by_shutdown(sync_box: SyncBox) -> None:
    session_id = sync_box.invoke("forever")
    with sync_box.stream(session_id) as ws:
        assert json.loads(ws.receive_text())["type"] == "attached"
        message = ws.receive()
        assert message.get("bytes") == b"started", message
        stopped = sync_box.client.delete(
            f"/v1/functions/{sync_box.function['function_id']}",
            headers={"Authorization": f"Bearer {sync_box.function['shutdown_token']}"},
        )
        assert stopped.json()["sessions_stopped"] == 1
        _, end = _read_until_end(ws)
    assert (end["state"], end["cause"]) == ("killed", "shutdown")
    assert end["reason"] == "its function was shut down"
