"""What a function prints goes to its client as logs, apart from its output.

``sys.stdout`` and ``sys.stderr`` become writers that send LOG frames; ``print()``,
``warnings`` and ``logging`` (whose handlers write to ``sys.stderr``) follow. Lines are
sent whole when they end, or in pieces of at most ``PIECE`` characters; whatever is left
is flushed before the function's result, so the client has the logs before the end.
"""

from __future__ import annotations

import io
import sys

from bento.protocol.frames import Frame
from bento.runtime.channel import Channel

PIECE = 16 << 10


class LogWriter(io.TextIOBase):
    def __init__(self, channel: Channel, tag: bytes, name: str) -> None:
        self._channel = channel
        self._tag = tag
        self._name = name
        self._pending: list[str] = []
        self._size = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._pending.append(text)
        self._size += len(text)
        if "\n" in text or self._size >= PIECE:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if not self._size:
            return
        text = "".join(self._pending)
        self._pending, self._size = [], 0
        data = text.encode("utf-8", errors="backslashreplace")
        for start in range(0, len(data), PIECE):
            self._channel.send(Frame.LOG, self._tag + data[start : start + PIECE])


def capture(channel: Channel) -> tuple[LogWriter, LogWriter]:
    """Send the process's stdout and stderr to the client as logs, from now on."""
    out = LogWriter(channel, b"1", "<stdout>")
    err = LogWriter(channel, b"2", "<stderr>")
    sys.stdout, sys.stderr = out, err
    return out, err


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, LogWriter):
            stream.flush()
