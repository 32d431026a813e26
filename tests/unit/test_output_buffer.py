"""OutputBuffer: exactly-once delivery across re-attach, backpressure, and the end of the stream."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bento.server import buffer
from bento.server.buffer import OutputBuffer
from properties import examples


async def _settle() -> None:
    """Let every task that can make progress do so (pure asyncio, no I/O: a few loop turns suffice)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def _blocked(task: asyncio.Task[None]) -> bool:
    await _settle()
    return not task.done()


async def test_acknowledging_frees_space_and_unblocks_put() -> None:
    out = OutputBuffer(capacity=10)
    await out.put(b"abcdef")
    writer = asyncio.create_task(out.put(b"ghijkl"))  # 6 + 6 > 10: the function must wait
    assert await _blocked(writer)
    assert out.end == 6

    out.ack(1)  # 5 + 6 > 10: still waits
    assert await _blocked(writer)

    out.ack(2)  # 4 + 6 <= 10
    await asyncio.wait_for(writer, 1)
    assert (out.acked, out.end, out.held) == (2, 12, 10)
    assert await out.read(2) == b"cdefghijkl"


async def test_a_chunk_larger_than_the_capacity_cannot_wedge_the_stream() -> None:
    out = OutputBuffer(capacity=4)
    await asyncio.wait_for(out.put(b"0123456789"), 1)  # an empty buffer takes any chunk
    writer = asyncio.create_task(out.put(b"x"))
    assert await _blocked(writer)
    out.ack(10)
    await asyncio.wait_for(writer, 1)
    assert await out.read(10) == b"x"


async def test_read_waits_for_data_and_close_ends_it_after_the_data() -> None:
    out = OutputBuffer(capacity=100)
    reader = asyncio.create_task(out.read(0))
    await _settle()
    assert not reader.done()
    await out.put(b"late")
    assert await asyncio.wait_for(reader, 1) == b"late"

    waiting = asyncio.create_task(out.read(4))
    await _settle()
    await out.put(b"!")
    out.close()
    assert await asyncio.wait_for(waiting, 1) == b"!"
    assert await out.read(0) == b"late!", "closing loses nothing unacknowledged"
    assert await out.read(5) is None
    assert await out.read(500) is None

    idle = OutputBuffer(capacity=100)
    pending = asyncio.create_task(idle.read(0))
    await _settle()
    idle.close()
    assert await asyncio.wait_for(pending, 1) is None, "close wakes a waiting reader"


async def test_acks_out_of_range_are_clamped() -> None:
    out = OutputBuffer(capacity=100)
    await out.put(b"abc")
    await out.put(b"def")
    out.ack(4)
    out.ack(2)  # going back is ignored
    assert (out.acked, out.held) == (4, 2)
    out.ack(10**9)  # beyond what was sent: everything sent is acknowledged
    assert (out.acked, out.held) == (6, 0)
    await out.put(b"g")
    assert await out.read(6) == b"g"


async def test_a_read_returns_at_most_read_chunk_bytes() -> None:
    out = OutputBuffer(capacity=10 << 20)
    data = bytes(range(256)) * ((buffer.READ_CHUNK * 2) // 256 + 3)
    await out.put(data)
    out.close()
    offset, pieces = 0, []
    while (piece := await out.read(offset)) is not None:
        assert 0 < len(piece) <= buffer.READ_CHUNK
        pieces.append(piece)
        offset += len(piece)
    assert b"".join(pieces) == data
    assert len(pieces) == 3


@settings(max_examples=examples(200), deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=40), max_size=25),
    read_chunk=st.integers(1, 64),
    data=st.data(),
)
async def test_every_byte_is_delivered_exactly_once_across_reattaches(
    chunks: list[bytes], read_chunk: int, data: st.DataObject
) -> None:
    """A client attaches, reads, acknowledges some of what it read, and vanishes; again and again.

    What the client keeps is what it acknowledged; each attachment resumes at ``acked``. In
    the end the kept bytes are the whole stream: nothing lost, nothing twice, in order.
    """
    stream = b"".join(chunks)
    out = OutputBuffer(capacity=1 << 30)
    pending = list(chunks)
    kept = bytearray()  # the client's copy: only what it acknowledged survives a detach
    with mock.patch.object(buffer, "READ_CHUNK", read_chunk):
        for _attachment in range(data.draw(st.integers(1, 6), label="attachments")):
            offset = out.acked  # what Attached tells the client
            assert offset == len(kept)
            unacked = bytearray()
            for _step in range(data.draw(st.integers(0, 12), label="steps")):
                action = data.draw(st.sampled_from(["put", "read", "ack"]))
                if action == "put" and pending:
                    await out.put(pending.pop(0))
                elif action == "read" and out.end > offset:
                    piece = await out.read(offset)
                    assert piece and len(piece) <= read_chunk
                    offset += len(piece)
                    unacked += piece
                elif action == "ack":
                    upto = data.draw(st.integers(out.acked, offset), label="ack")
                    kept += unacked[: upto - out.acked]
                    del unacked[: upto - out.acked]
                    out.ack(upto)
                assert out.held == out.end - out.acked >= 0
            # The connection drops here: ``unacked`` is lost with it.
        for chunk in pending:
            await out.put(chunk)
        out.close()
        offset = out.acked
        while (piece := await out.read(offset)) is not None:
            offset += len(piece)
            kept += piece
            out.ack(offset)
    assert bytes(kept) == stream
    assert out.held == 0


@pytest.mark.parametrize("capacity", [1, 7, 64])
async def test_a_slow_reader_and_a_fast_writer_keep_memory_bounded(capacity: int) -> None:
    out = OutputBuffer(capacity)
    chunks = [bytes([i]) * (1 + i % 5) for i in range(60)]
    peak = 0

    async def write() -> None:
        for chunk in chunks:
            await out.put(chunk)
        out.close()

    writer = asyncio.create_task(write())
    received = bytearray()
    while (piece := await out.read(len(received))) is not None:
        peak = max(peak, out.held)
        received += piece
        await asyncio.sleep(0)
        out.ack(len(received))
    await writer
    assert bytes(received) == b"".join(chunks)
    assert peak <= max(capacity, 5), "held output never exceeds the capacity (or one chunk)"
