"""Traces: cells counted from TLS records in a capture."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bento.eval import dataset, traces

dpkt = pytest.importorskip("dpkt")
from bento.eval.capture import tls_records  # noqa: E402

CLIENT, GUARD, OTHER = "127.0.0.2", "127.0.0.1", "127.0.0.3"
GUARD_PORT = 5001


def record(length: int, kind: int = 23) -> bytes:
    return bytes([kind, 3, 3]) + length.to_bytes(2, "big") + bytes(length)


def frame(src: str, sport: int, dst: str, dport: int, seq: int, data: bytes) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq % 2**32, flags=dpkt.tcp.TH_ACK, data=data)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_TCP, data=tcp)
    ip.len = len(bytes(ip))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6, data=ip))


def write(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out)
        for time, data in packets:
            writer.writepkt(data, ts=time)
    return path


def test_records_are_read_across_segments_out_of_order_and_retransmitted(tmp_path: Path) -> None:
    up = record(531)  # one cell from the client
    down = record(5 * 514 + 17) + record(514 + 17)  # five cells, then one, to the client
    hello = record(200, kind=22)  # a handshake record: no cells
    seq = 2**32 - 100  # wraps around within the stream
    packets = [
        (1.0, frame(CLIENT, 40000, GUARD, GUARD_PORT, 7, hello + up)),
        (1.1, frame(GUARD, GUARD_PORT, CLIENT, 40000, seq, down[:500])),
        (1.2, frame(GUARD, GUARD_PORT, CLIENT, 40000, seq + 1000, down[1000:])),  # ahead of its turn
        (1.3, frame(GUARD, GUARD_PORT, CLIENT, 40000, seq + 500, down[500:1000])),
        (1.4, frame(GUARD, GUARD_PORT, CLIENT, 40000, seq + 500, down[500:1000])),  # a retransmission
        (1.5, frame(OTHER, 40001, GUARD, GUARD_PORT, 9, record(531))),  # another relay: not ours
    ]
    records = tls_records(write(tmp_path / "c.pcap", packets), CLIENT, GUARD_PORT)
    assert records == [(1.0, 1, 531), (1.3, -1, 5 * 514 + 17), (1.3, -1, 514 + 17)]
    trace = dataset.batches(records).trace(3, 1, "tor")
    assert trace.directions.tolist() == [1, -1, -1, -1, -1, -1, -1]
    assert trace.times[0] == 0.0 and trace.times[-1] == pytest.approx(0.3)


def test_a_capture_that_starts_inside_a_record_finds_the_next_one(tmp_path: Path) -> None:
    stream = record(3000) + record(531) + record(1045)
    packets = [(2.0, frame(GUARD, GUARD_PORT, CLIENT, 40000, 1, stream[1200:]))]  # mid-record
    records = tls_records(write(tmp_path / "c.pcap", packets), CLIENT, GUARD_PORT)
    assert records == [(2.0, -1, 531), (2.0, -1, 1045)]


def test_a_stream_that_is_not_tls_is_an_error(tmp_path: Path) -> None:
    junk = b"GET / HTTP/1.1\r\nX-Filler: " + b"\x00" * 70_000
    packets = [
        (1.0, frame(CLIENT, 40000, GUARD, GUARD_PORT, 1 + at, junk[at : at + 30_000]))
        for at in (0, 30_000, 60_000)
    ]
    with pytest.raises(ValueError, match="not a TLS stream"):
        tls_records(write(tmp_path / "c.pcap", packets), CLIENT, GUARD_PORT)


def test_cells_per_record() -> None:
    assert traces.cells_in_record(514 + 17) == 1
    assert traces.cells_in_record(10 * 514 + 17) == 10
    assert traces.cells_in_record(40) == 1  # never zero
