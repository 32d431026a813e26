"""Circuit cover on the box: ``circuits(count, rate, seconds)``.

It listens on the box (its *sink*), builds ``count`` circuits in the box's Tor for
functions whose exits reach that sink, opens one stream over each, and sends junk cells
through every stream at ``rate`` cells per second for ``seconds``, paced by the monotonic
clock (frame ``k`` is due at ``start + k / rate``; a late sender catches up). The sink
reads and counts what arrives, and accepts only streams that open with this session's
random tag: cover never goes to anyone but the function itself.

While it runs it sends one JSON line a second to the client (progress); its result is
the whole account: per circuit, its path, the bytes sent and the bytes the sink received.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from bento.runtime import api

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CELL_PAYLOAD = 498  # stream bytes in one RELAY_DATA cell: one write of this size is one cell
MAX_CIRCUITS = 16
MAX_RATE = 1000  # cells per second, per circuit
MAX_SECONDS = 600
BUILD_TIMEOUT = 60.0
TAG_BYTES = 16
CATCH_UP = 64  # cells a late sender may send at once
SINKS = ("box",)


class CoverError(Exception):
    """The cover could not be set up as asked; the message says why."""


def circuits(count: int = 3, rate: int = 50, seconds: float = 10.0, sink: str = "box") -> dict[str, Any]:
    """Cover ``count`` circuits at ``rate`` cells/s each for ``seconds``, into this function's sink."""
    _check(count, rate, seconds, sink)
    tag = os.urandom(TAG_BYTES)
    listener = api.listen()
    host, port = "127.0.0.1", listener.getsockname()[1]
    sink_counts: dict[int, int] = {}
    stop = threading.Event()
    arrived = threading.Condition()
    accepting = threading.Thread(target=_sink, args=(listener, tag, sink_counts, stop, arrived), daemon=True)
    accepting.start()
    built = _build(count, (host, port))
    streams = [circuit.connect(host, port, timeout=30) for circuit in built]
    sent = [0] * count
    started = time.monotonic()
    senders = [
        threading.Thread(target=_send, args=(s, tag, i, rate, started + seconds, sent), daemon=True)
        for i, s in enumerate(streams)
    ]
    for sender in senders:
        sender.start()
    while any(sender.is_alive() for sender in senders):
        api.send(json.dumps({"seconds": round(time.monotonic() - started, 1), "sent": sum(sent)}) + "\n")
        for sender in senders:
            sender.join(timeout=1.0 / len(senders))
    elapsed = time.monotonic() - started
    for s in streams:
        s.close()
    with arrived:  # the last cells are still crossing the circuits to the sink
        arrived.wait_for(lambda: all(sink_counts.get(i, 0) >= n for i, n in enumerate(sent)), timeout=10)
    stop.set()
    listener.close()
    if -1 in sink_counts:
        raise CoverError(f"the sink could not accept streams (errno {sink_counts[-1]})")
    report = [
        {
            "path": circuit.path,
            "bytes_sent": sent[i],
            "bytes_received": sink_counts.get(i, 0),
            "cells_per_second": round(sent[i] / CELL_PAYLOAD / elapsed, 1),
        }
        for i, circuit in enumerate(built)
    ]
    for circuit in built:
        circuit.close()
    return {"circuits": report, "rate": rate, "seconds": round(elapsed, 2), "sink": sink}


def _check(count: Any, rate: Any, seconds: Any, sink: Any) -> None:
    if sink not in SINKS:
        raise CoverError(
            f"cover goes only to a sink of this function ({', '.join(SINKS)}), never to {str(sink)[:80]!r}"
        )
    if not isinstance(count, int) or not 1 <= count <= MAX_CIRCUITS:
        raise CoverError(f"circuits: 1 to {MAX_CIRCUITS}, not {count!r}")
    if not isinstance(rate, int) or not 1 <= rate <= MAX_RATE:
        raise CoverError(f"rate: 1 to {MAX_RATE} cells per second per circuit, not {rate!r}")
    if not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_SECONDS:
        raise CoverError(f"seconds: more than 0, at most {MAX_SECONDS}, not {seconds!r}")


def _build(count: int, sink: tuple[str, int]) -> list[api.tor.Circuit]:
    """``count`` circuits whose exits reach the sink; all built, or a clear error."""
    if not api.tor.relays(flags=["Exit"], exit_to=sink):
        raise CoverError(f"no exit in the consensus may connect to this box's sink at {sink[0]}:{sink[1]}")
    pending = [api.tor.circuit(length=3, exit_to=sink) for _ in range(count)]
    built = []
    try:
        for circuit in pending:
            built.append(circuit.wait(timeout=BUILD_TIMEOUT))
    except (api.tor.TorError, TimeoutError) as exc:
        for circuit in pending:
            circuit.close()
        raise CoverError(f"could not build {count} circuits ({len(built)} built): {exc}") from None
    return built


def _send(sock: socket.socket, tag: bytes, index: int, rate: int, until: float, sent: list[int]) -> None:
    """One cell's worth of junk every 1/rate s until ``until``, on the monotonic clock: cell ``k``
    is due at ``start + k / rate``; a sender that fell behind sends up to 64 at once, skips older."""
    junk = os.urandom(CELL_PAYLOAD * CATCH_UP)
    try:
        sock.sendall(tag + bytes([index]) + junk[: CELL_PAYLOAD - TAG_BYTES - 1])
        sent[index] += CELL_PAYLOAD
        start, due = time.monotonic(), 1
        while (now := time.monotonic()) < until:
            owed = int((now - start) * rate) + 1 - due
            if owed > CATCH_UP:
                due += owed - CATCH_UP
                owed = CATCH_UP
            if owed > 0:
                sock.sendall(junk[: owed * CELL_PAYLOAD])
                sent[index] += owed * CELL_PAYLOAD
                due += owed
            time.sleep(max(0.0, min(until, start + due / rate) - time.monotonic()))
    except OSError:
        return  # the circuit closed: its count says how far it got


def _sink(
    listener: socket.socket,
    tag: bytes,
    counts: dict[int, int],
    stop: threading.Event,
    arrived: threading.Condition,
) -> None:
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            peer, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError as exc:
            if not stop.is_set():
                counts[-1] = exc.errno or -1  # the sink broke: the report says so
            return
        threading.Thread(target=_drain, args=(peer, tag, counts, stop, arrived), daemon=True).start()


def _drain(
    peer: socket.socket,
    tag: bytes,
    counts: dict[int, int],
    stop: threading.Event,
    arrived: threading.Condition,
) -> None:
    """Count a stream's bytes, if it opens with our tag; anything else is dropped unread."""
    with peer:
        peer.settimeout(30)
        head = b""
        try:
            while len(head) < TAG_BYTES + 1:
                chunk = peer.recv(TAG_BYTES + 1 - len(head))
                if not chunk:
                    return
                head += chunk
            if head[:TAG_BYTES] != tag:
                return
            index = head[TAG_BYTES]
            counts[index] = counts.get(index, 0) + len(head)
            while not stop.is_set() and (chunk := peer.recv(1 << 16)):
                with arrived:
                    counts[index] += len(chunk)
                    arrived.notify_all()
        except OSError:
            return
