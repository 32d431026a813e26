"""Invoke -> first output byte, measured by one client tree (run by bench/invoke_latency.py).

    PYTHONPATH=<tree>/src python bench/invoke_probe.py KEYRING FUNCTION SOCKS MODE RUNS

MODE: ``post`` (POST /sessions, then attach on a new connection: the wire pattern of the
client before ``Box.start``, whose WebSocket library opened a Tor stream of its own) or
``ws`` (``Box.start``: the invocation rides the WebSocket upgrade). Prints JSON: for a warm
connection (one Box, reused) and a new connection per run (a new Box, as each ``bento``
command has), the seconds from the call to the first output byte; and the reference round
trip: a GET of the descriptor right after another on the same, open connection (one HTTP
request and its answer over the circuit, with no stream to open).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bento.client.box import Box
from bento.client.keyring import Keyring


async def once(box: Box, deployment: Any, mode: str) -> float:
    started = time.perf_counter()
    if mode == "ws":
        stream = await box.start(deployment, "main", ["bench"])
        return await first_byte(stream, started)
    session_id = await box.invoke(deployment, "main", ["bench"])
    async with Box(deployment.onion, socks=box.socks) as other:
        return await first_byte(await other.attach(deployment, session_id), started)


async def first_byte(stream: Any, started: float) -> float:
    async with stream:
        first = await stream.receive()
        elapsed = time.perf_counter() - started
        assert first
        while await stream.receive() is not None:
            pass
    return elapsed


async def round_trip(box: Box) -> float:
    """One warm GET: the first one may have to open a connection (the previous session's
    WebSocket took the one the client had, a new Tor stream), the second reuses it."""
    await box.descriptor()
    started = time.perf_counter()
    await box.descriptor()
    return time.perf_counter() - started


async def measure(keyring: Path, function: str, socks: str, mode: str, runs: int) -> dict[str, Any]:
    deployment = Keyring(keyring).function(function)
    warm: list[float] = []
    fetch: list[float] = []
    async with Box(deployment.onion, socks=socks) as box:
        await once(box, deployment, mode)  # the circuit and the connection come up
        for _ in range(runs):
            warm.append(await once(box, deployment, mode))
            fetch.append(await round_trip(box))
    new: list[float] = []
    for _ in range(runs):
        async with Box(deployment.onion, socks=socks) as box:
            new.append(await once(box, deployment, mode))
    return {"warm": warm, "new": new, "descriptor": fetch}


if __name__ == "__main__":
    keyring, function, socks, mode, runs = sys.argv[1:6]
    print(json.dumps(asyncio.run(measure(Path(keyring), function, socks, mode, int(runs)))))
