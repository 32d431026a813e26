"""Link cover end to end in process: the real client and the box's app, every message in frames."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import wsproto
from localbox import LocalBox, bearer

from bento.client.cover import Cover, CoveredLink
from bento.errors import BentoError, Refused
from bento.protocol.cover import HEADER, frame_size

SOURCE = """
from bento.runtime import api

def echo():
    api.send("hello")
    while (data := api.recv()) is not None:
        api.send(data.upper())
    return "done"

def big(size):
    api.send(bytes(size))
    return size
"""


covering = pytest.mark.parametrize("box_limits", [{"policy": {"cover": {"max_rate": 2000}}}])


@covering
async def test_a_covered_session_carries_input_output_and_its_end(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    cover = Cover(rate=800, burst=2, lead=0.2, duration=0.5, tail=0.2)
    async with asyncio.timeout(30):
        stream = await box.client.start(function, "echo", cover=cover)
        assert isinstance(stream._link, CoveredLink)
        assert await stream.receive() == b"hello"
        await stream.send(b"abc")
        assert await stream.receive() == b"ABC"
        await stream.close_input()
        assert await stream.receive() is None
        assert stream.ended is not None and stream.ended.result == "done"
        channel = stream._link.channel
        await stream.close()
    assert channel.stats.frames > 0 and channel.stats.frames_in > 0
    assert channel.stats.junk_bytes > channel.stats.real_bytes  # mostly junk at this rate


@covering
async def test_output_larger_than_the_window_arrives_whole_through_flow_control(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    size = 3 << 20  # over the 2 MiB window: the box must wait for the client's consumption
    async with asyncio.timeout(60):
        stream = await box.client.start(function, "big", [size], cover=Cover(rate=1000, burst=32, lead=0))
        received = 0
        async with stream:
            async for chunk in stream:
                received += len(chunk)
        assert received == size and stream.ended is not None and stream.ended.result == size


@pytest.mark.parametrize("box_limits", [{"policy": {"cover": {"max_rate": 100, "max_total_rate": 150}}}])
async def test_the_box_refuses_cover_over_its_policy_with_a_clear_error(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    with pytest.raises(BentoError, match="at most 100 cells/s"):
        await box.client.start(function, "echo", cover=Cover(rate=1_000_000))  # refused before sending
    header = {HEADER: base64.urlsafe_b64encode(json.dumps({"rate": 10**9}).encode()).decode()}
    path = f"/v1/functions/{function.function_id}/invoke"
    async with box.websocket_with(path, {**bearer(function.invocation_token), **header}) as ws:
        refusal = json.loads(await ws.receive_text())
    assert refusal["code"] == "cover-refused" and "100 cells/s" in refusal["error"]
    # The second covered stream at 100 cells/s would take the box past its 150 in all.
    async with asyncio.timeout(30):
        first = await box.client.start(function, "echo", cover=Cover(rate=100, lead=0, tail=0))
        with pytest.raises(Refused) as refused:
            await box.client.start(function, "echo", cover=Cover(rate=100, lead=0))
        assert refused.value.code == "cover-full"
        await first.close_input()
        async with first:
            async for _ in first:
                pass


@covering
async def test_cover_is_refused_to_whoever_has_no_token_before_a_frame_is_sent(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    header = {HEADER: base64.urlsafe_b64encode(json.dumps({"rate": 50}).encode()).decode()}
    path = f"/v1/functions/{function.function_id}/invoke"
    async with box.websocket_with(path, {**bearer("forged"), **header}) as ws:
        event = await ws.receive()
    assert isinstance(event, wsproto.events.TextMessage)
    assert json.loads(event.data)["code"] == "wrong-token"


@covering
async def test_a_client_breaking_the_frames_is_cut_off_and_the_session_ends(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    header = {HEADER: base64.urlsafe_b64encode(json.dumps({"rate": 50}).encode()).decode()}
    path = f"/v1/functions/{function.function_id}/invoke"
    got: list[Any] = []
    async with box.websocket_with(path, {**bearer(function.invocation_token), **header}) as ws:
        first = await ws.receive()
        assert isinstance(first, wsproto.events.BytesMessage) and len(first.data) == frame_size(1)
        await ws.send_bytes(b"not a frame")
        with pytest.raises(Exception):  # noqa: B017 (the box closes: how httpx-ws says it varies)
            async with asyncio.timeout(10):
                while True:
                    got.append(await ws.receive())
    assert all(isinstance(e, wsproto.events.BytesMessage) for e in got)


async def test_a_box_without_a_cover_policy_refuses_cover_and_the_client_knows_first(
    box: LocalBox,
) -> None:
    function = await box.upload(SOURCE)
    with pytest.raises(BentoError, match="covers no session streams"):
        await box.client.start(function, "echo", cover=Cover(rate=10))
    header = {HEADER: base64.urlsafe_b64encode(json.dumps({"rate": 10}).encode()).decode()}
    path = f"/v1/functions/{function.function_id}/invoke"
    async with box.websocket_with(path, {**bearer(function.invocation_token), **header}) as ws:
        refusal = json.loads(await ws.receive_text())
    assert refusal["code"] == "cover-refused"
    assert box.registry.sessions == {}  # nothing was invoked
