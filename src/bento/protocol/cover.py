"""Link cover: the session stream at a constant cell rate, real bytes in place of junk.

A covered session's WebSocket carries nothing but *cover frames*, in both directions: one
binary message of a fixed size every ``burst / rate`` seconds, whatever the session has to
say. The session's own messages (output, input, events) travel inside the frames as
*records*; a frame with nothing to carry is all junk, and the receiver drops the junk.

>>> request = CoverRequest(rate=200, burst=2, linger=30)
>>> request.period, frame_size(request.burst)
(0.01, 988)
>>> frame = encode_frame(encode_record(TEXT, b'{"type": "eof"}'), 0, frame_size(2))
>>> len(frame)
988
>>> reader = RecordReader(limit=1 << 20)
>>> length, consumed = decode_frame(frame)
>>> reader.feed(frame[HEAD.size : HEAD.size + length])
[(2, b'{"type": "eof"}')]

The layout (big-endian), chosen so that each frame fills exactly ``burst`` Tor cells:

- a frame is ``burst * 498 - 8`` bytes (498: a RELAY_DATA cell's payload; 8: the largest
  WebSocket header of a message this size, a client's masked one):
  ``length (u16) | consumed (u64) | length real bytes | junk (random)``;
- ``consumed`` counts the real bytes its sender has taken in so far: the peer may have at
  most ``WINDOW`` real bytes in flight beyond it (flow control without stalling the junk);
- the real bytes are a stream of records, which may span frames:
  ``kind (u8: 1 bytes, 2 text) | size (u32) | data``.

Standard library and pydantic only: shared by the client, the server and the tests.
"""

from __future__ import annotations

import os
import struct

from pydantic import BaseModel, ConfigDict, Field

CELL_BYTES = 514  # a Tor cell on the wire (link protocol 4 and later)
CELL_PAYLOAD = 498  # the stream bytes one RELAY_DATA cell carries
WS_HEADER = 8  # a masked WebSocket header for 126..65535 bytes; the box's unmasked one is 4
HEAD = struct.Struct(">HQ")  # real length, real bytes consumed
RECORD = struct.Struct(">BI")  # kind, size
BYTES, TEXT = 1, 2
WINDOW = 2 << 20  # real bytes one side may send beyond what the other has consumed
RECORD_PIECE = 64 << 10  # binary messages go as records of at most this many bytes
MAX_BURST = 64  # cells per frame: keeps a frame under the u16 length
MAX_LEAD = 50.0  # seconds of cover before a covered invocation goes (the box waits 60 s for it)
HEADER = "Bento-Cover"  # the request header that asks for cover (base64url of CoverRequest JSON)


class CoverError(ValueError):
    """A frame or record that breaks the cover protocol (the peer is broken or hostile)."""


class CoverRequest(BaseModel):
    """What a client asks of the box: the rate of both directions, and how long it may linger."""

    # defer_build: each schema is built when first used, so a command builds only its own.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rate: int = Field(ge=1, description="cells per second, each way (a cell is 514 bytes on the wire)")
    burst: int = Field(
        default=1, ge=1, le=MAX_BURST, description="cells per frame: frames come every burst/rate s"
    )
    linger: float = Field(
        default=30.0,
        ge=0,
        description="seconds the box keeps covering after the session ended, unless the client closes first",
    )

    @property
    def period(self) -> float:
        return self.burst / self.rate

    def bytes_per_second(self) -> int:
        """Wire bytes per second, each way, that a watcher of the client's link sees."""
        return self.rate * CELL_BYTES


def frame_size(burst: int) -> int:
    """The size of every frame (one WebSocket message) of a session covered with ``burst``."""
    return burst * CELL_PAYLOAD - WS_HEADER


def capacity(size: int) -> int:
    """The real bytes one frame of ``size`` can carry."""
    return size - HEAD.size


def encode_frame(real: bytes, consumed: int, size: int, junk: bytes | None = None) -> bytes:
    """A frame of exactly ``size`` bytes carrying ``real``; the rest is ``junk`` (random by default)."""
    room = capacity(size)
    if len(real) > room:
        raise ValueError(f"{len(real)} real bytes do not fit a frame of {size} ({room} at most)")
    fill = room - len(real)
    if junk is None:
        junk = os.urandom(fill)  # random: whatever a layer below might compress, it cannot
    return HEAD.pack(len(real), consumed) + real + junk[:fill]


def decode_frame(frame: bytes) -> tuple[int, int]:
    """The real length and the consumed count of a frame (its real bytes follow ``HEAD``)."""
    if len(frame) < HEAD.size:
        raise CoverError(f"a cover frame of {len(frame)} bytes is shorter than its header")
    length, consumed = HEAD.unpack_from(frame)
    if length > len(frame) - HEAD.size:
        raise CoverError(f"a cover frame of {len(frame)} bytes claims {length} real bytes")
    return length, consumed


def encode_record(kind: int, data: bytes) -> bytes:
    return RECORD.pack(kind, len(data)) + data


class RecordReader:
    """Reassembles records from the real bytes of consecutive frames; bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    @property
    def held(self) -> int:
        return len(self._buffer)

    def feed(self, real: bytes) -> list[tuple[int, bytes]]:
        self._buffer += real
        records = []
        while len(self._buffer) >= RECORD.size:
            kind, size = RECORD.unpack_from(self._buffer)
            if kind not in (BYTES, TEXT):
                raise CoverError(f"a cover record of unknown kind {kind}")
            if size > self.limit:
                raise CoverError(f"a cover record of {size} bytes is over the limit of {self.limit}")
            end = RECORD.size + size
            if len(self._buffer) < end:
                break
            records.append((kind, bytes(self._buffer[RECORD.size : end])))
            del self._buffer[:end]
        return records


def parse_rate(text: str) -> int:
    """A rate in cells per second: ``200``, ``200cells/s``, or wire bytes ``100KB/s`` (514 B a cell).

    >>> parse_rate("200"), parse_rate("200 cells/s"), parse_rate("100KB/s"), parse_rate("1MB/s")
    (200, 200, 195, 1946)
    """
    value = text.strip().lower().replace(" ", "")
    units = {"kb/s": 1000, "kib/s": 1024, "mb/s": 1000_000, "mib/s": 1 << 20, "b/s": 1}
    for suffix, scale in units.items():
        if value.endswith(suffix):
            number = _number(value[: -len(suffix)], text)
            return max(1, round(number * scale / CELL_BYTES))
    for suffix in ("cells/s", "cell/s", "c/s", ""):
        if value.endswith(suffix):
            number = _number(value[: len(value) - len(suffix)], text)
            if number != int(number):
                break
            return int(number)
    raise ValueError(f"not a rate: {text!r} (cells per second, e.g. 200, or bytes, e.g. 100KB/s)")


def _number(text: str, whole: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(
            f"not a rate: {whole!r} (cells per second, e.g. 200, or bytes, e.g. 100KB/s)"
        ) from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"a rate must be positive, not {whole!r}")
    return number
