"""The framed protocol between the server and a function instance.

An instance is a separate process that shares no memory with the server; the two speak
over one inherited stream socket in frames of ``type (1 byte) | length (4 bytes, big
endian) | payload``. Control frames carry JSON, data frames raw bytes. This module is
imported by the runtime inside the sandbox, so it uses the standard library only.
"""

from __future__ import annotations

import json
import struct
from enum import IntEnum

TYPE_CHECKING = False  # importing typing would cost the sandbox ~3 ms of start-up
if TYPE_CHECKING:
    from typing import Any

HEADER = struct.Struct(">BI")
MAX_PAYLOAD = 1 << 20  # larger sends are split; bounds what either side must buffer


class Frame(IntEnum):
    START = 1  # server -> instance: JSON {"module", "entry", "args", "kwargs", "code_dir"}
    INPUT = 2  # server -> instance: bytes from the client
    EOF = 3  # server -> instance: the client closed its input
    OUTPUT = 4  # instance -> server: bytes for the client
    RESULT = 5  # instance -> server: JSON {"value": ...}; the session completed
    ERROR = 6  # instance -> server: JSON {"type", "message", "traceback"}
    READY = 7  # instance -> server, first: the runtime is up and waits for START
    LOG = 8  # instance -> server: b"1" (stdout) or b"2" (stderr), then UTF-8 text it printed


class FrameError(Exception):
    """A peer sent something that is not a frame of this protocol."""


def encode(kind: Frame, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(kind, len(payload)) + payload


def encode_json(kind: Frame, value: Any) -> bytes:
    return encode(kind, json.dumps(value).encode())


def decode_header(header: bytes) -> tuple[Frame, int]:
    kind, length = HEADER.unpack(header)
    try:
        frame = Frame(kind)
    except ValueError:
        raise FrameError(f"unknown frame type {kind}") from None
    if length > MAX_PAYLOAD:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
    return frame, length


def decode_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise FrameError(f"malformed JSON frame: {exc}") from None
