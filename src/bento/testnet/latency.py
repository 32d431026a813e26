"""Wide-area latency for the testnet, emulated in user space: a delaying relay per link.

On a loopback every hop takes microseconds, so a testnet says nothing about page-load
times on Tor. With latency on, each relay's advertised ORPort is not tor's own: tor
listens on another port (``ORPort ... NoAdvertise``) and this process sits on the
advertised one, carrying every byte across after a fixed one-way delay, in both
directions and in order, without limiting bandwidth. Every connection to a relay (the
client to its guard, relay to relay) so crosses one delayed link; the corpus's web
server gets its own delay the same way, on each of its addresses.

Why not netem: the kernel of these machines has no ``sch_netem`` (CONFIG_NET_SCH_NETEM is
not set), and neither ``fq`` for EDT pacing, so a qdisc cannot delay loopback packets
here. The relay delays chunks as ``read()`` returns them, which is coarser than per
packet; for the one-way delays of tens of milliseconds used here the difference is small.
A TCP handshake with a link is not delayed (the link answers it at once and connects onward
at once): what is delayed is every byte, so TLS handshakes between relays, cells, and HTTP
requests and answers all pay the delay, but a bare TCP connect does not.

Run as ``python -m bento.testnet.latency SPEC.json READY_FILE``; SPEC is a list of
``[listen_host, listen_port, target_host, target_port, delay_ms]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bento.tor.process import serve_until_signalled

CHUNK = 64 * 1024

# ``--wan``: one-way delays typical of the live network, as round trips of 50 ms between
# relays and 80 ms from an exit to a web server. Tor's relays cluster in Europe, where
# round trips between the main hosting hubs (Frankfurt, Amsterdam, Paris, London) are
# about 10-30 ms and transatlantic ones about 75-90 ms (WonderNetwork's published ping
# statistics between cities, https://wondernetwork.com/pings); a circuit's hops mix both,
# and web servers are often farther from the exit than relays from each other.
WAN_HOP_MS = 25.0
WAN_WEB_MS = 40.0


@dataclass(frozen=True)
class Link:
    listen: tuple[str, int]
    target: tuple[str, int]
    delay: float  # seconds, one way

    @classmethod
    def parse(cls, item: list[object]) -> Link:
        lh, lp, th, tp, ms = item
        return cls((str(lh), int(str(lp))), (str(th), int(str(tp))), float(str(ms)) / 1000)


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Deliver each chunk ``delay`` seconds after it arrived, in order; then close."""
    # Bounded, so that a slow reader on the far side still slows the sender down.
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async with asyncio.TaskGroup() as group:
        group.create_task(deliver())
        while True:
            data = await reader.read(CHUNK)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                break


async def serve_link(link: Link, sock: socket.socket | None = None) -> asyncio.Server:
    """Listen on ``link.listen`` (or on ``sock``, already bound) and carry each connection."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30):
                target_r, target_w = await asyncio.open_connection(*link.target)
        except (OSError, TimeoutError):
            client_w.close()
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_carry(client_r, target_w, link.delay))
                group.create_task(_carry(target_r, client_w, link.delay))
        except* (OSError, asyncio.IncompleteReadError):
            pass  # one side went away: the other is closed below
        finally:
            for writer in (client_w, target_w):
                writer.close()

    if sock is not None:
        return await asyncio.start_server(handle, sock=sock)
    return await asyncio.start_server(handle, *link.listen)


async def serve(links: list[Link], ready: Path | None = None) -> None:
    """Carry every link until cancelled; touch ``ready`` once all listen."""
    servers = [await serve_link(link) for link in links]
    try:
        if ready is not None:
            tmp = ready.with_suffix(".tmp")
            tmp.write_text("ready")
            tmp.replace(ready)
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()


def main(argv: list[str]) -> int:
    links = [Link.parse(item) for item in json.loads(Path(argv[0]).read_text())]
    ready = Path(argv[1])

    serve_until_signalled(serve(links, ready))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
