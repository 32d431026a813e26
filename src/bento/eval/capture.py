"""From a packet capture of the client's link to the TLS records an attacker counts cells in.

The capture itself is Debian's ``dumpcap`` (:mod:`bento.eval.sniff`), with a capture
filter on the ports of the victim's connection to its guard (:mod:`bento.eval.victim`), so
that only that link is recorded. Here the TCP streams are put back in order (dpkt parses
the packets) and the TLS record headers read off them: five bytes each, type, version and
length, which TLS leaves in the clear. Only application-data records carry cells.

    >>> records = list(_records_in(bytes([23, 3, 3, 2, 19]) + bytes(531), 0.5))
    >>> records
    [(0.5, 531)]
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APPLICATION_DATA = 23
_MAX_RECORD = (1 << 14) + 256
_RESYNC_LIMIT = 4 * _MAX_RECORD  # a TLS stream shows a record boundary well before this


@dataclass
class _Stream:
    """One direction of one TCP connection, put back in order."""

    first_seq: int | None = None
    next: int = 0  # bytes in order so far
    synced: bool = False  # found a record boundary yet
    pending: dict[int, bytes] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=bytearray)
    records: list[tuple[float, int]] = field(default_factory=list)

    def add(self, seq: int, data: bytes, time: float) -> None:
        if self.first_seq is None:
            self.first_seq = seq
        at = (seq - self.first_seq) % (1 << 32)  # relative, so a sequence number may wrap
        if at + len(data) <= self.next:
            return  # a retransmission of what we have
        self.pending[at] = data
        while (start := next((s for s in self.pending if s <= self.next), None)) is not None:
            chunk = self.pending.pop(start)
            fresh = chunk[self.next - start :]
            if fresh:  # in order only now: the attacker can read it at this packet's time
                self.next += len(fresh)
                self.buffer += fresh
                self._parse(time)

    def _parse(self, time: float) -> None:
        if not self.synced:
            # A capture starts on a live connection, maybe inside a record: skip to the
            # first offset where two record headers follow each other.
            start = _boundary(self.buffer)
            if start is None:
                if len(self.buffer) > _RESYNC_LIMIT:
                    raise ValueError(f"not a TLS stream: no record boundary in {_RESYNC_LIMIT} bytes")
                return
            del self.buffer[:start]
            self.synced = True
        consumed = 0
        for end, length in _headers(self.buffer):
            self.records.append((time, length))
            consumed = end
        if consumed:
            del self.buffer[:consumed]


def _valid(buffer: bytearray | bytes, at: int) -> bool | None:
    """Whether a record header starts at ``at`` (None: the buffer ends first)."""
    if len(buffer) - at < 5:
        return None
    length = int.from_bytes(buffer[at + 3 : at + 5], "big")
    return buffer[at] in (20, 21, 22, 23) and buffer[at + 1] == 3 and length <= _MAX_RECORD


def _boundary(buffer: bytearray) -> int | None:
    """The first offset where a record header is followed by another (or by the buffer's end)."""
    for at in range(len(buffer)):
        if _valid(buffer, at):
            following = at + 5 + int.from_bytes(buffer[at + 3 : at + 5], "big")
            if _valid(buffer, following) is not False:
                return at
        elif _valid(buffer, at) is None:
            return None
    return None


def _headers(buffer: bytearray | bytes) -> Iterator[tuple[int, int]]:
    """``(end offset, length)`` of each complete application-data record at the buffer's start."""
    at = 0
    while len(buffer) - at >= 5:
        kind, major, length = buffer[at], buffer[at + 1], int.from_bytes(buffer[at + 3 : at + 5], "big")
        if kind not in (20, 21, 22, 23) or major != 3 or length > _MAX_RECORD:
            raise ValueError(f"not a TLS stream (record type {kind}, version {major}, length {length})")
        if len(buffer) - at - 5 < length:
            return
        at += 5 + length
        if kind == APPLICATION_DATA:
            yield at, length


def _records_in(data: bytes, time: float) -> Iterator[tuple[float, int]]:
    for _, length in _headers(data):
        yield time, length


def tls_records(pcap: Path, client: str, guard_port: int) -> list[tuple[float, int, int]]:
    """``(time, direction, length)`` of every application-data record between ``client`` and
    the guard's OR port, in time order: direction +1 from the client, -1 towards it."""
    import dpkt

    streams: dict[tuple[str, int, str, int], _Stream] = {}
    with pcap.open("rb") as raw:
        reader = dpkt.pcap.Reader(raw)
        linktype = reader.datalink()
        for time, frame in reader:
            ip = _ip_of(frame, linktype)
            if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            src, dst = _address(ip.src), _address(ip.dst)
            if guard_port not in (tcp.sport, tcp.dport) or client not in (src, dst) or not tcp.data:
                continue
            key = (src, tcp.sport, dst, tcp.dport)
            streams.setdefault(key, _Stream()).add(tcp.seq, bytes(tcp.data), float(time))
    out = [
        (time, 1 if key[0] == client and key[3] == guard_port else -1, length)
        for key, stream in streams.items()
        for time, length in stream.records
    ]
    return sorted(out, key=lambda record: record[0])


def _ip_of(frame: bytes, linktype: int) -> Any:
    import dpkt

    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            packet = dpkt.ethernet.Ethernet(frame).data
        elif linktype == dpkt.pcap.DLT_LINUX_SLL:
            packet = dpkt.sll.SLL(frame).data
        elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            packet = dpkt.loopback.Loopback(frame).data
        else:
            packet = dpkt.ip.IP(frame)
    except (dpkt.UnpackError, ValueError):
        return None
    return packet if isinstance(packet, dpkt.ip.IP | dpkt.ip6.IP6) else None


def _address(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)
