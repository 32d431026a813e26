"""The real client library against the app in process: typed errors, one-round-trip invoke,
logs apart from output, and re-attaching by itself when the connection drops."""

from __future__ import annotations

import hashlib

import httpcore
import pytest
from localbox import LocalBox

from bento.client import Retry
from bento.errors import BentoError, Busy, ConnectionLost, Invalid, NotFound, Refused, Unauthorized
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import Log, LogStream

SOURCE = """
import logging, sys, time, warnings
from bento.runtime import api

def hello(name):
    print("starting", name)
    api.send(f"hello {name}")
    sys.stderr.write("to stderr\\n")
    warnings.warn("careful")
    logging.warning("logged")
    return len(name)

def flood(total, piece):
    for start in range(0, total, piece):
        api.send(bytes((start // piece + i) % 251 for i in range(piece)))
    return total

def chatty(lines):
    for i in range(lines):
        print("line", i, "x" * 1000)
    return lines

def first():
    data = api.recv()
    api.send(data.upper())
    api.poll(30)  # more input has come: it returns, leaving most of it unread
    return len(data)

def forever():
    api.send("started")
    time.sleep(120)
"""


def _flood(total: int, piece: int) -> bytes:
    return b"".join(
        bytes((start // piece + i) % 251 for i in range(piece)) for start in range(0, total, piece)
    )


async def test_start_streams_output_and_logs_apart_in_one_connection(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    seen: list[Log] = []
    async with await box.client.start(function, "hello", ["bento"], on_log=seen.append) as stream:
        output = b"".join([chunk async for chunk in stream])
    assert output == b"hello bento"
    assert stream.ended is not None and stream.ended.result == 5
    text = {s: "".join(e.text for e in seen if e.stream is s) for s in LogStream}
    assert text[LogStream.STDOUT] == "starting bento\n"
    assert "to stderr\n" in text[LogStream.STDERR]
    assert "UserWarning: careful" in text[LogStream.STDERR]
    assert "WARNING:root:logged" in text[LogStream.STDERR]
    assert stream.logs == seen
    assert stream.ended.usage.log_bytes == sum(len(e.text.encode()) for e in seen)
    assert stream.ended.usage.bytes_out == len(output)  # logs are not output

    kept = await box.client.logs(function, stream.session_id)
    assert kept.logs == seen and kept.dropped == 0 and kept.total == stream.ended.usage.log_bytes


async def test_logs_are_capped_oldest_first_and_count_what_was_dropped(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    async with await box.client.start(function, "chatty", [1500]) as stream:
        async for _ in stream:
            pass
    kept = await box.client.logs(function, stream.session_id)
    assert kept.total == sum(len(f"line {i} {'x' * 1000}\n") for i in range(1500))
    assert kept.dropped > 0 and kept.total - kept.dropped <= 1 << 20
    assert kept.logs[-1].text.startswith("line 1499 ")
    assert kept.logs[0].offset == kept.dropped


async def test_invoking_a_large_invocation_goes_in_the_first_message(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    name = "x" * 20000  # over the header's share
    async with await box.client.start(function, "hello", [name]) as stream:
        output = b"".join([chunk async for chunk in stream])
    assert output == f"hello {name}".encode()
    assert stream.ended is not None and stream.ended.result == 20000


async def test_refusals_are_typed_and_keep_the_code_and_status(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    with pytest.raises(NotFound) as found:
        await box.client.start(function, "nope")
    assert found.value.code is ErrorCode.UNKNOWN_ENTRY and found.value.status == 404
    assert "hello" in found.value.message  # it lists the entry points

    response = await box.http.post(
        f"/v1/functions/{function.function_id}/sessions", json={"entry": 1}, headers=function.invoke_auth
    )
    error = Refused.from_body(response.status_code, response.json())
    assert isinstance(error, Invalid) and error.code is ErrorCode.INVALID_REQUEST

    function.invocation_token = "forged"
    with pytest.raises(Unauthorized) as wrong:
        await box.client.invoke(function, "hello", ["x"])
    assert wrong.value.code is ErrorCode.WRONG_TOKEN and wrong.value.status == 403
    with pytest.raises(Unauthorized):
        await box.client.start(function, "hello", ["x"])
    with pytest.raises(BentoError) as local:
        await box.client.start(function, "not an identifier")  # refused before anything is sent
    assert not isinstance(local.value, Refused) and "entry" in local.value.message


async def test_a_busy_function_is_a_retryable_refusal(box: LocalBox) -> None:
    function = await box.upload(SOURCE, needs={"instances": 1})
    async with await box.client.start(function, "forever") as stream:
        assert await stream.receive() == b"started"
        with pytest.raises(Busy) as busy:
            await box.client.invoke(function, "forever")
        assert busy.value.retry and busy.value.code is ErrorCode.FUNCTION_BUSY
        box.registry.sessions[stream.session_id].kill("test over")


async def _collapse(max_bytes: int, timeout: float | None = None) -> bytes:
    raise httpcore.ReadError("the circuit collapsed")


@pytest.mark.parametrize("how", ["network-error", "stream-closed"])
async def test_a_dropped_connection_is_re_attached_and_every_byte_arrives_once(
    box: LocalBox, how: str
) -> None:
    function = await box.upload(SOURCE)
    total, piece = 3 << 20, 64 << 10
    box.client.retry = Retry(attempts=5, first_delay=0.01)
    stream = await box.client.start(function, "flood", [total, piece])
    drops: list[int] = []
    stream.on_reconnect = lambda attempt, why: drops.append(attempt)
    received = bytearray()
    async with stream:
        async for chunk in stream:
            received += chunk
            if len(received) // (1 << 20) > len(drops) and len(drops) < 2:
                # The network goes, not the session: a read fails, or the stream under the WebSocket ends.
                if how == "network-error":
                    stream._link.ws.stream.read = _collapse  # type: ignore[method-assign]
                else:
                    await stream._link.ws.stream.aclose()
    assert stream.reattached == 2 and drops == [1, 1]
    assert len(received) == total
    assert hashlib.sha256(received).digest() == hashlib.sha256(_flood(total, piece)).digest()
    assert stream.ended is not None and stream.ended.result == total


async def test_a_stream_gives_up_when_the_box_stays_unreachable(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    box.client.retry = Retry(attempts=2, first_delay=0.01)
    stream = await box.client.start(function, "forever")
    assert await stream.receive() == b"started"

    async def unreachable(logs_from: int) -> None:
        from bento.errors import TransportError

        raise TransportError("the circuit collapsed")

    stream._attach = unreachable  # type: ignore[assignment]
    await stream._link.ws.stream.aclose()
    with pytest.raises(ConnectionLost) as lost:
        await stream.receive()
    assert f"bento attach {stream.session_id}" in (lost.value.fix or "")
    box.registry.sessions[stream.session_id].kill("test over")


async def test_a_forged_log_frame_is_a_protocol_violation(box: LocalBox) -> None:
    function = await box.upload(
        "import time\n"
        "from bento.protocol.frames import Frame\n"
        "from bento.runtime import api\n"
        "def forge():\n"
        "    api._get().send(Frame.LOG, b'9no such stream')\n"
        "    time.sleep(60)\n"
    )
    session_id = await box.invoke(function, "forge")
    info = await box.wait_state(function, session_id, timeout=10)
    assert (info["state"], info["cause"]) == ("killed", "policy"), info["reason"]
    assert "LOG frame" in info["reason"]


async def test_logs_count_against_the_output_limit(box: LocalBox) -> None:
    function = await box.upload(
        "def spew():\n    while True:\n        print('x' * 65536)\n", needs={"output_mb": 1}
    )
    async with await box.client.start(function, "spew") as stream:
        async for _ in stream:
            pass
    assert stream.ended is not None
    assert (stream.ended.state, stream.ended.cause) == ("killed", "output")
    assert "output and logs" in stream.ended.reason
    assert stream.ended.usage.log_bytes <= 1 << 20


async def test_a_function_that_leaves_input_unread_still_answers(box: LocalBox) -> None:
    # It returns with input still queued in its socket; the box must still read its output
    # and its return value (the kernel reports that exit to the box as a reset, not an EOF).
    function = await box.upload(SOURCE)
    for _ in range(5):
        async with await box.client.start(function, "first") as stream:
            await stream.send(b"ping")
            output = await stream.receive() or b""
            for _ in range(16):
                await stream.send(bytes(64 << 10))
            await stream.close_input()
            output += b"".join([chunk async for chunk in stream])
        assert stream.ended is not None
        assert (output, stream.ended.result, stream.ended.reason) == (b"PING", 4, "")
