"""The instance's end of the framed socket to the server (blocking, single-threaded)."""

from __future__ import annotations

import select
import socket
import threading

from bento.protocol.frames import HEADER, MAX_PAYLOAD, Frame, decode_header, encode, encode_json

TYPE_CHECKING = False  # importing typing would cost the sandbox ~3 ms of start-up
if TYPE_CHECKING:
    from typing import Any


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self.input_closed = False
        self._send_lock = threading.Lock()  # a function's threads may print while it sends

    # --- writing -------------------------------------------------------------------
    def send(self, kind: Frame, payload: bytes = b"") -> None:
        # A full socket blocks here: that is the backpressure from a slow client.
        view = memoryview(payload)
        with self._send_lock:
            if not view:
                self.sock.sendall(encode(kind))
            for start in range(0, len(view), MAX_PAYLOAD):
                self.sock.sendall(encode(kind, bytes(view[start : start + MAX_PAYLOAD])))

    def send_json(self, kind: Frame, value: Any) -> None:
        with self._send_lock:
            self.sock.sendall(encode_json(kind, value))

    def send_frame(self, frame: bytes) -> None:
        """An already encoded frame (the result, built before anything is sent)."""
        with self._send_lock:
            self.sock.sendall(frame)

    # --- reading -------------------------------------------------------------------
    def _frame_ready(self) -> bool:
        if len(self._buffer) < HEADER.size:
            return False
        _, length = decode_header(bytes(self._buffer[: HEADER.size]))
        return len(self._buffer) >= HEADER.size + length

    def _fill(self, timeout: float | None) -> bool:
        """Read more bytes; False on timeout. Raises EOFError if the server hung up."""
        # poll, not select: the server's descriptor numbers pass through, and on a box of
        # hundreds of instances they are past the 1023 select() can wait for (ValueError).
        waiting = select.poll()
        waiting.register(self.sock, select.POLLIN)
        if not waiting.poll(None if timeout is None else timeout * 1000):
            return False
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("the server closed the instance channel")
        self._buffer += chunk
        return True

    def read_frame(self, timeout: float | None = None) -> tuple[Frame, bytes] | None:
        """The next frame, or None if none arrived within ``timeout`` seconds."""
        while not self._frame_ready():
            if not self._fill(timeout):
                return None
        kind, length = decode_header(bytes(self._buffer[: HEADER.size]))
        payload = bytes(self._buffer[HEADER.size : HEADER.size + length])
        del self._buffer[: HEADER.size + length]
        return kind, payload
