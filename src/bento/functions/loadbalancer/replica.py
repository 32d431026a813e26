"""LoadBalancer's replica: the user's service behind an onion service of its own, on a box.

Uploaded with the user's module (``bento_lb_service``) and started by the LoadBalancer
function, never by a person. ``serve`` publishes a new onion service, says its address
on its output (one JSON line), and hands each connection to the service's handler, a
plain ``handle(conn)`` that gets a connected socket::

    def handle(conn):
        request = conn.recv(4096)
        conn.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nhello\\n")

At most ``concurrency`` handlers run at once (threads); further connections wait in the
listener's backlog. The LoadBalancer sends a heartbeat on the session's input; without
one for ``HEARTBEAT_LOST`` seconds (the LoadBalancer is gone) or once the input closes,
the replica ends, and its onion service goes with its instance.
"""

from __future__ import annotations

import importlib
import json
import socket
import threading

from bento.runtime import api

HEARTBEAT_LOST = 45.0
MAX_CONCURRENCY = 64


class ReplicaError(Exception):
    """The service cannot be served as asked; the message says why."""


def serve(module: str, entry: str = "handle", concurrency: int = 4, idle_seconds: float = 60.0) -> int:
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise ReplicaError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}")
    if not isinstance(idle_seconds, int | float) or not 0 < idle_seconds <= 3600:
        raise ReplicaError("idle_seconds must be between 0 and 3600")
    handler = getattr(importlib.import_module(module), entry, None)
    if not callable(handler):
        raise ReplicaError(f"the service module has no function {entry}(conn)")
    listener = api.listen()
    service = api.tor.publish(listener, virtual_port=80)
    served = [0]
    threading.Thread(
        target=_accept, args=(listener, handler, concurrency, float(idle_seconds), served), daemon=True
    ).start()
    api.send(json.dumps({"address": service.address}) + "\n")
    while True:  # heartbeats from the LoadBalancer; without them, this replica is orphaned
        try:
            if api.recv(timeout=HEARTBEAT_LOST) is None:
                break
        except TimeoutError:
            print(f"no heartbeat from the LoadBalancer for {HEARTBEAT_LOST:g} s: stopping")
            break
    listener.close()
    return served[0]


def _accept(
    listener: socket.socket, handler: object, concurrency: int, idle: float, served: list[int]
) -> None:
    slots = threading.BoundedSemaphore(concurrency)
    while True:
        slots.acquire()  # a connection is accepted only when a handler is free
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # closed: the replica is stopping
        conn.settimeout(idle)  # a client that sends nothing does not hold a handler forever
        threading.Thread(target=_handle, args=(handler, conn, slots, served), daemon=True).start()


def _handle(
    handler: object, conn: socket.socket, slots: threading.BoundedSemaphore, served: list[int]
) -> None:
    try:
        with conn:
            handler(conn)  # type: ignore[operator]
    except Exception as exc:  # the service's bug must not stop the replica: it is logged
        print(f"the handler raised {type(exc).__name__}: {exc}")
    finally:
        served[0] += 1
        slots.release()
