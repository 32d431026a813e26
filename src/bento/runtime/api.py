"""The API a Bento function imports: ``from bento.runtime import api``.

A session is a byte stream in both directions between the function and its client:

    def main(name):
        api.send(f"hello {name}\\n")
        while (line := api.recv()) is not None:   # None: the client closed its input
            api.send(line.upper())
        return "done"                           # ends the session with a JSON result

``connect``, ``listen`` and ``resolve`` reach the network through the broker;
``tor`` builds circuits and publishes onion services (see bento.runtime.tor).
"""

from __future__ import annotations

import time

from bento.protocol.frames import Frame
from bento.runtime import storage, tor
from bento.runtime.channel import Channel
from bento.runtime.net import connect, listen, resolve

__all__ = ["connect", "listen", "poll", "recv", "resolve", "send", "storage", "tor"]

_channel: Channel | None = None
_pending: list[bytes] = []


def _bind(channel: Channel) -> None:
    global _channel
    _channel = channel


def _get() -> Channel:
    if _channel is None:
        raise RuntimeError("bento.runtime.api is only usable inside a running Bento function")
    return _channel


def send(data: bytes | str) -> None:
    """Send bytes (str is UTF-8 encoded) to the client. Blocks while the client is slow."""
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if payload:
        _get().send(Frame.OUTPUT, payload)


def recv(timeout: float | None = None) -> bytes | None:
    """The next bytes from the client, or None once the client has closed its input.

    Blocks until data arrives; with ``timeout`` (seconds) raises TimeoutError instead
    of waiting longer.
    """
    channel = _get()
    if _pending:
        return _pending.pop(0)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not channel.input_closed:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        frame = channel.read_frame(remaining)
        if frame is None:
            raise TimeoutError("no input from the client in time")
        kind, payload = frame
        if kind is Frame.INPUT:
            return payload
        if kind is Frame.EOF:
            channel.input_closed = True
    return None


def poll(timeout: float = 0.0) -> bool:
    """True if ``recv()`` would return at once (data waiting, or the input closed)."""
    channel = _get()
    if _pending or channel.input_closed:
        return True
    frame = channel.read_frame(timeout)
    if frame is None:
        return False
    kind, payload = frame
    if kind is Frame.INPUT:
        _pending.append(payload)
    elif kind is Frame.EOF:
        channel.input_closed = True
    return True
