"""Link cover's frames and records, and its pacer, driven by an injected clock (no sleeps)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bento.protocol.cover import (
    BYTES,
    CELL_PAYLOAD,
    HEAD,
    TEXT,
    CoverError,
    CoverRequest,
    RecordReader,
    capacity,
    decode_frame,
    encode_frame,
    encode_record,
    frame_size,
    parse_rate,
)
from bento.protocol.cover_channel import CoverChannel


class FakeClock:
    """Time moves only when the pacer sleeps: each sleep jumps to its deadline at once."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        self.t = max(self.t, deadline)
        await asyncio.sleep(0)  # let the other tasks run: a yield, not a wait


@pytest.mark.parametrize("burst", [1, 2, 8, 64])
def test_a_frame_and_its_websocket_header_fill_exactly_burst_cells(burst: int) -> None:
    size = frame_size(burst)
    assert size + 8 == burst * CELL_PAYLOAD  # a client's masked header: 8 bytes
    assert (burst - 1) * CELL_PAYLOAD < size + 4 <= burst * CELL_PAYLOAD  # the box's: 4
    frame = encode_frame(b"real", 7, size)
    assert len(frame) == size
    assert decode_frame(frame) == (4, 7)
    assert frame[HEAD.size : HEAD.size + 4] == b"real"


def test_junk_is_random_and_real_bytes_must_fit() -> None:
    size = frame_size(1)
    assert encode_frame(b"", 0, size) != encode_frame(b"", 0, size)
    encode_frame(b"x" * capacity(size), 0, size)
    with pytest.raises(ValueError, match="do not fit"):
        encode_frame(b"x" * (capacity(size) + 1), 0, size)


def test_a_frame_claiming_more_real_bytes_than_it_holds_is_refused() -> None:
    frame = bytearray(encode_frame(b"", 0, frame_size(1)))
    frame[0:2] = (frame_size(1)).to_bytes(2, "big")
    with pytest.raises(CoverError, match="claims"):
        decode_frame(bytes(frame))
    with pytest.raises(CoverError, match="shorter"):
        decode_frame(b"\x00")


@given(st.lists(st.tuples(st.sampled_from([BYTES, TEXT]), st.binary(max_size=300)), max_size=8), st.data())
def test_records_come_back_whole_however_the_frames_cut_them(
    records: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode_record(kind, payload) for kind, payload in records)
    reader = RecordReader(limit=1 << 16)
    got: list[tuple[int, bytes]] = []
    position = 0
    while position < len(stream):
        step = data.draw(st.integers(min_value=1, max_value=64))
        got += reader.feed(stream[position : position + step])
        position += step
    assert got == records
    assert reader.held == 0


def test_a_hostile_record_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(CoverError, match="over the limit"):
        RecordReader(limit=1000).feed(encode_record(BYTES, b"")[:1] + (10**9).to_bytes(4, "big"))
    with pytest.raises(CoverError, match="unknown kind"):
        RecordReader(limit=1000).feed(b"\x09\x00\x00\x00\x01x")


def test_rates_in_cells_or_wire_bytes_per_second() -> None:
    assert parse_rate("250") == 250
    assert parse_rate("250 cells/s") == 250
    assert parse_rate("514KB/s") == 1000
    for bad in ("", "fast", "-5", "0", "1.5", "inf", "nanKB/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    with pytest.raises(ValueError):
        CoverRequest(rate=0)
    with pytest.raises(ValueError):
        CoverRequest(rate=10, burst=65)
    assert CoverRequest(rate=100, burst=4).period == 0.04


def _channel(
    sent: list[tuple[float, bytes]],
    clock: FakeClock,
    *,
    period: float = 0.01,
    until: int = 10,
    stall: tuple[int, float] = (0, 0.0),
    **kw: int,
) -> tuple[CoverChannel, asyncio.Event]:
    enough = asyncio.Event()

    async def send_raw(frame: bytes) -> None:
        sent.append((clock.now(), frame))
        if len(sent) == stall[0]:
            clock.t += stall[1]  # this send took that long: the host was busy
        if len(sent) >= until:
            enough.set()
        await asyncio.sleep(0)

    async def receive_raw() -> bytes | None:
        await asyncio.Event().wait()  # nothing ever arrives
        return None

    channel = CoverChannel(send_raw, receive_raw, period=period, frame_size=frame_size(1), clock=clock, **kw)
    return channel, enough


async def test_the_pacer_sends_a_frame_every_period_on_the_clock() -> None:
    clock, sent = FakeClock(), []
    channel, enough = _channel(sent, clock, until=50)
    async with channel:
        await channel.send(TEXT, b"hello")
        await enough.wait()
    times = [t for t, _ in sent[:50]]
    assert times == pytest.approx([100.0 + k * 0.01 for k in range(50)])
    assert all(len(frame) == frame_size(1) for _, frame in sent)
    real = b"".join(f[HEAD.size : HEAD.size + decode_frame(f)[0]] for _, f in sent)
    assert real == encode_record(TEXT, b"hello")
    assert channel.stats.late == channel.stats.skipped == 0


async def test_a_pacer_that_fell_behind_catches_up_then_skips_what_is_too_late() -> None:
    clock, sent = FakeClock(), []
    channel, enough = _channel(sent, clock, until=20, catch_up=3, stall=(5, 0.1005))
    async with channel:
        await enough.wait()
    # Frames 0-4 on time; the 5th send took 0.1005 s, so frames 5-14 (due 100.05 to 100.14) are
    # due at 100.1405: one, and three more to catch up, go at once; six are skipped.
    assert channel.stats.late == 3 and channel.stats.skipped == 6
    times = [round(t, 4) for t, _ in sent[:12]]
    assert times == [100.0, 100.01, 100.02, 100.03, 100.04] + [100.1405] * 4 + [100.15, 100.16, 100.17]


async def test_send_waits_while_the_outbox_is_full_and_the_junk_keeps_its_rate() -> None:
    clock, sent = FakeClock(), []
    channel, _ = _channel(sent, clock, until=10**9, outbox=2000)
    async with channel:
        await channel.send(BYTES, b"a" * 1990)
        blocked = asyncio.create_task(channel.send(BYTES, b"b" * 1000))
        await asyncio.sleep(0)
        assert not blocked.done()  # backpressure: the outbox holds at most 2000 bytes
        async with asyncio.timeout(5):
            await blocked  # the pacer drained the outbox, a frame a period
        assert channel.pending <= 2000


async def test_a_sender_stops_at_the_window_the_receiver_has_not_consumed() -> None:
    clock, sent = FakeClock(), []
    channel, enough = _channel(sent, clock, until=100, outbox=1 << 20, window=4000)
    async with channel:
        for _ in range(3):
            await channel.send(BYTES, b"z" * 3000)
        async with asyncio.timeout(5):
            await enough.wait()
    assert channel.stats.real_bytes == 4000  # the peer consumed nothing: no more than the window
    assert len({len(frame) for _, frame in sent}) == 1  # and the frames went on, all junk


async def _pair(clock: FakeClock, **kw: int) -> tuple[CoverChannel, CoverChannel]:
    a_to_b: asyncio.Queue[bytes | None] = asyncio.Queue()
    b_to_a: asyncio.Queue[bytes | None] = asyncio.Queue()
    size = frame_size(2)
    a = CoverChannel(a_to_b.put, b_to_a.get, period=0.01, frame_size=size, clock=clock, **kw)
    b = CoverChannel(b_to_a.put, a_to_b.get, period=0.01, frame_size=size, clock=clock, **kw)
    return a, b


async def test_two_channels_carry_messages_both_ways_in_order() -> None:
    clock = FakeClock()
    a, b = await _pair(clock, window=70_000)
    payload = bytes(range(256)) * 1000  # over the window: flow control must let it through anyway
    async with a, b, asyncio.timeout(20):
        sending = asyncio.create_task(a.send(BYTES, payload))
        await b.send(TEXT, b'{"type": "ack", "offset": 5}')
        got = bytearray()
        while len(got) < len(payload):
            message = await b.receive()
            assert message is not None and message[0] == BYTES
            got += message[1]
        await sending
        assert await a.receive() == (TEXT, b'{"type": "ack", "offset": 5}')
    assert bytes(got) == payload


async def test_a_peer_that_breaks_the_protocol_fails_the_receiver_after_what_came_before() -> None:
    clock = FakeClock()
    frames: asyncio.Queue[bytes | None] = asyncio.Queue()
    good = encode_frame(encode_record(TEXT, b"first"), 0, frame_size(1))
    await frames.put(good)
    await frames.put(b"short frame")

    async def send_raw(frame: bytes) -> None:
        await asyncio.sleep(0)

    channel = CoverChannel(send_raw, frames.get, period=0.01, frame_size=frame_size(1), clock=clock)
    async with channel, asyncio.timeout(5):
        assert await channel.receive() == (TEXT, b"first")
        with pytest.raises(CoverError, match="not the .* agreed"):
            await channel.receive()


async def test_a_peer_claiming_to_have_consumed_more_than_was_sent_is_refused() -> None:
    clock = FakeClock()
    frames: asyncio.Queue[bytes | None] = asyncio.Queue()
    await frames.put(encode_frame(b"", 10**6, frame_size(1)))

    async def send_raw(frame: bytes) -> None:
        await asyncio.sleep(0)

    channel = CoverChannel(send_raw, frames.get, period=0.01, frame_size=frame_size(1), clock=clock)
    async with channel, asyncio.timeout(5):
        with pytest.raises(CoverError, match="consumed"):
            await channel.receive()
