"""The session WebSocket on the wire, in process: events, acknowledgements, re-attach, backpressure.

The real client hides these details (see test_client.py); here a raw WebSocket checks
the protocol as docs/api.md states it, for clients written in other languages.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import uvicorn
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect
from localbox import LocalBox, Uploaded

from bento.client.box import Box

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


def _stream(box: LocalBox, session_id: str, token: str | None) -> Any:
    return box.websocket(f"/v1/sessions/{session_id}/stream", token)


async def _read_until_end(ws: AsyncWebSocketSession) -> tuple[bytes, dict[str, Any]]:
    """Every output byte up to the Ended event, and that event."""
    data = bytearray()
    while True:
        message = await ws.receive()
        if isinstance(message.data, bytes | bytearray):
            data += message.data
            continue
        event = json.loads(message.data)
        assert event["type"] == "end", event
        return bytes(data), event


async def _ended(box: LocalBox, function: Uploaded, session_id: str, **expected: Any) -> dict[str, Any]:
    """Wait until the session has ended and ``expected`` fields of SessionInfo hold."""
    async with asyncio.timeout(15):
        while True:
            info = await box.session_info(function, session_id)
            if info["state"] != "running" and all(info[k] == v for k, v in expected.items()):
                return info
            await asyncio.sleep(0.02)


async def test_stream_carries_bytes_both_ways_and_ends_with_the_result(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "echo")
    async with _stream(box, session_id, function.session_rights[session_id]) as ws:
        assert json.loads(await ws.receive_text()) == {"type": "attached", "offset": 0}
        assert await ws.receive_bytes() == b"hello"
        await ws.send_text(json.dumps({"type": "ack", "offset": 5}))
        await ws.send_bytes(b"abc")
        assert await ws.receive_bytes() == b"ABC"
        await ws.send_text(json.dumps({"type": "something-newer", "x": 1}))  # unknown events are ignored
        await ws.send_bytes(b"xyz")
        assert await ws.receive_bytes() == b"XYZ"
        await ws.send_text(json.dumps({"type": "eof"}))
        rest, end = await _read_until_end(ws)
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
    info = await _ended(box, function, session_id, attached=False)
    assert (info["bytes_in"], info["bytes_out"]) == (6, 11)


async def test_reattach_resumes_after_the_last_acknowledged_byte(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "two_parts")
    await _ended(box, function, session_id)

    async with _stream(box, session_id, function.session_rights[session_id]) as ws:
        assert json.loads(await ws.receive_text())["offset"] == 0
        data, end = await _read_until_end(ws)
        assert data == b"0123456789"
        assert (end["state"], end["result"]) == ("completed", 10)
        await ws.send_text(json.dumps({"type": "ack", "offset": 4}))  # the client kept only "0123"
    await _ended(box, function, session_id, buffered=6, attached=False)

    async with _stream(box, session_id, function.session_rights[session_id]) as ws:
        assert json.loads(await ws.receive_text()) == {"type": "attached", "offset": 4}
        data, end = await _read_until_end(ws)
        assert data == b"456789", "exactly the unacknowledged bytes, in order"
        assert end["result"] == 10
        await ws.send_text(json.dumps({"type": "ack", "offset": 10}))
    await _ended(box, function, session_id, buffered=0, attached=False)

    async with _stream(box, session_id, function.session_rights[session_id]) as ws:
        assert json.loads(await ws.receive_text()) == {"type": "attached", "offset": 10}
        assert (await _read_until_end(ws))[0] == b""


async def test_the_newest_attachment_wins(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "forever")
    async with _stream(box, session_id, function.session_rights[session_id]) as first:
        assert json.loads(await first.receive_text())["type"] == "attached"
        assert await first.receive_bytes() == b"started"
        async with _stream(box, session_id, function.session_rights[session_id]) as second:
            assert json.loads(await second.receive_text()) == {"type": "attached", "offset": 0}
            assert await second.receive_bytes() == b"started", "nothing was acknowledged, so it comes again"
            with pytest.raises(WebSocketDisconnect) as closed:
                await first.receive()
            assert closed.value.code == 4001
            assert "another client attached" in (closed.value.reason or "")
            assert (await box.session_info(function, session_id))["attached"]
    box.registry.sessions[session_id].kill("test over")


async def test_a_refused_stream_gets_an_error_body_then_a_policy_close(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "two_parts")
    for target, token, code in [
        (session_id, "wrong", "wrong-token"),
        (session_id, function.shutdown_token, "wrong-token"),  # the owner stops sessions, reads none
        (session_id, function.invocation_token, "wrong-token"),  # whoever invokes reads only their own
        ("no-such-session", function.invocation_token, "unknown-session"),
    ]:
        async with _stream(box, target, token) as ws:
            error = json.loads(await ws.receive_text())
            assert error["code"] == code
            assert set(error) == {"error", "code", "fix"}
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()
            assert closed.value.code == 1008
    await _ended(box, function, session_id)


async def test_a_refused_invocation_on_the_websocket_spends_nothing(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    path = f"/v1/functions/{function.function_id}/invoke"
    async with box.websocket(path, function.invocation_token) as ws:
        await ws.send_text("{not json")
        error = json.loads(await ws.receive_text())
        assert error["code"] == "invalid-request" and "InvokeRequest" in error["error"]
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive()
        assert closed.value.code == 1008
    assert not box.registry.sessions, "no session for a malformed invocation"


@pytest.mark.parametrize("box_limits", [{"session_buffer_bytes": 64 << 10}])
async def test_an_absent_client_blocks_the_function_not_the_memory(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    total, piece = 1 << 20, 16 << 10
    session_id = await box.invoke(function, "flood", total, piece)
    session = box.registry.sessions[session_id]
    async with asyncio.timeout(15):
        while session.output.held < 48 << 10:
            await session.output._changed.wait()  # set at every change of the buffer
    info = await box.session_info(function, session_id)
    assert info["state"] == "running", "with nobody reading, the function waits in api.send()"
    assert info["buffered"] <= 64 << 10, "the box holds at most session_buffer_bytes of output"

    received = bytearray()
    async with _stream(box, session_id, function.session_rights[session_id]) as ws:
        assert json.loads(await ws.receive_text())["offset"] == 0
        while True:
            message = await ws.receive()
            if not isinstance(message.data, bytes | bytearray):
                end = json.loads(message.data)
                break
            received += message.data
            await ws.send_text(json.dumps({"type": "ack", "offset": len(received)}))
    assert (end["state"], end["result"]) == ("completed", total)
    expected = b"".join(bytes([i % 256]) * piece for i in range(total // piece))
    assert received == expected


async def test_an_exception_reaches_the_client_in_the_ended_event(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    async with await box.client.start(function, "fail") as stream:
        data = b"".join([chunk async for chunk in stream])
    end = stream.ended
    assert end is not None
    assert data == b"partial", "output sent before the exception is delivered"
    assert (end.state, end.cause, end.result) == ("error", "error", None)
    assert end.error is not None and end.error.type == "RuntimeError"
    assert end.error.message == "it broke"
    assert 'raise RuntimeError("it broke")' in end.error.traceback
    assert end.reason == "RuntimeError: it broke"


async def test_an_attached_client_sees_its_session_killed_by_shutdown(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    async with await box.client.start(function, "forever") as stream:
        assert await stream.receive() == b"started"
        stopped = await box.client.shutdown(function)
        assert stopped.sessions_stopped == 1
        assert await stream.receive() is None
    assert stream.ended is not None
    assert (stream.ended.state, stream.ended.cause) == ("killed", "shutdown")
    assert stream.ended.reason == "its function was shut down"


async def test_a_client_that_closes_is_seen_gone_on_its_close_and_the_session_runs_on(box: LocalBox) -> None:
    """Over real TCP (uvicorn on loopback, as the daemon serves the API): a client that stops
    reading, so that the box's buffer fills, then closes, is detached on its close, not after
    a keep-alive timeout (uvicorn pings every 20 s); its session runs on for the next one."""
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "flood", 8 << 20, 16 << 10)
    session = box.registry.sessions[session_id]
    listener = socket.create_server(("127.0.0.1", 0))  # listening at once: no wait for the server
    app = box.http._transport.app  # type: ignore[attr-defined]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with Box(box.signed.verify().onion, socks=None, base_url=url) as client:
            async with await client.attach(function, session_id) as stream:
                assert await stream.receive()
                async with asyncio.timeout(15):
                    while session.output.held < 48 << 10:  # nobody reads: the function waits
                        await session.output._changed.wait()  # set at every change of the buffer
                assert session.attachment is not None
            async with asyncio.timeout(5):  # far less than a keep-alive timeout
                while True:  # a poll of the box's state, as a client sees it
                    info = await box.session_info(function, session_id)
                    if not info["attached"]:
                        break
                    await asyncio.sleep(0.02)
        assert info["state"] == "running"
    finally:
        server.should_exit = True
        await serving
