"""Circuit cover's box side, without Tor: its refusals, and its sink's tag check."""

from __future__ import annotations

import socket
import threading

import pytest

from bento.functions.cover import function


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 50, 10.0, "127.0.0.1:80"), "never to '127.0.0.1:80'"),
        ((3, 50, 10.0, "example.org"), "never to 'example.org'"),
        ((0, 50, 10.0, "box"), "circuits: 1 to 16"),
        ((17, 50, 10.0, "box"), "circuits: 1 to 16"),
        ((3, 10**6, 10.0, "box"), "rate: 1 to 1000 cells per second"),
        ((3, 5.5, 10.0, "box"), "rate: 1 to 1000"),
        ((3, 50, 0, "box"), "seconds: more than 0"),
        ((3, 50, 10**9, "box"), "at most 600"),
        ((True, 50, 10.0, "box"), None),  # a bool is an int to Python; one circuit is fine
    ],
)
def test_cover_refuses_hostile_arguments_before_it_builds_anything(
    args: tuple[object, ...], message: str | None
) -> None:
    if message is None:
        function._check(*args)
        return
    with pytest.raises(function.CoverError, match=message):
        function._check(*args)


def test_the_sink_counts_only_streams_that_carry_the_session_tag() -> None:
    tag = b"t" * function.TAG_BYTES
    counts: dict[int, int] = {}
    stop, arrived = threading.Event(), threading.Condition()
    ours, ours_peer = socket.socketpair()
    theirs, theirs_peer = socket.socketpair()
    readers = [
        threading.Thread(target=function._drain, args=(peer, tag, counts, stop, arrived))
        for peer in (ours_peer, theirs_peer)
    ]
    for reader in readers:
        reader.start()
    with ours, theirs:
        ours.sendall(tag + bytes([2]) + b"x" * 1000)
        theirs.sendall(b"w" * function.TAG_BYTES + bytes([2]) + b"y" * 5000)
    for reader in readers:
        reader.join(timeout=30)
    assert counts == {2: function.TAG_BYTES + 1 + 1000}
