"""What a circuit of its own per right costs (bento.client.circuits): the first request under a
right no circuit carries yet, against one under a right whose circuit is up.

One testnet with wide-area latency (25 ms one way on every relay link, as `--wan`), one Bento
box. Each run is a GET of the box's descriptor (its smallest answer) from a new client, under:

- a new right: a new rendezvous circuit (introduction, rendezvous, and the stream on it);
- the same right again: a new stream on the circuit that right already has;
- a request on a connection already open under that right (one round trip, the reference).

By turns, so that the three see the same load.

    python bench/circuits.py [--runs 10] [--hop-ms 25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from bento.client import Box
from bento.protocol.descriptor import SignedDescriptor
from bento.testnet import Testnet, TestnetConfig
from record import record, summary

PATH = "/v1/descriptor"


async def timed_get(box: Box, right: str) -> float:
    started = time.perf_counter()
    await box._request("GET", PATH, SignedDescriptor, right=right)
    return (time.perf_counter() - started) * 1000


async def measure(onion: str, socks: str, runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"new right": [], "same right, new stream": [], "open connection": []}
    for _ in range(runs):
        right = secrets.token_urlsafe(24)  # a right nobody used: no circuit carries it yet
        async with Box(onion, socks=socks) as box:
            samples["new right"].append(await timed_get(box, right))
        async with Box(onion, socks=socks) as box:  # a new connection, so a new stream
            samples["same right, new stream"].append(await timed_get(box, right))
            samples["open connection"].append(await timed_get(box, right))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--hop-ms", type=float, default=25.0, help="one-way delay per relay link (ms)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = TestnetConfig(
            directory=Path(tmp) / "net", bento_boxes=1, owner_pid=os.getpid(), hop_delay_ms=args.hop_ms
        )
        with Testnet.start(config) as net:
            onion = net.state.boxes[0].bento_onion
            assert onion is not None
            asyncio.run(measure(onion, net.socks_address, 1))  # the box's descriptor is fetched once
            samples = asyncio.run(measure(onion, net.socks_address, args.runs))
    new, same = samples["new right"], samples["same right, new stream"]
    lines = [
        f"One testnet ({args.hop_ms:g} ms one way on every relay link), one Bento box; a GET of the box's",
        "descriptor from a new client, under a right with no circuit yet, then under the same right",
        "on a new connection, then on that connection again; by turns.",
        "",
        *(f"- {name}: {summary(values, 'ms')}" for name, values in samples.items()),
        "",
        f"A right's first request costs {statistics.median(new) / statistics.median(same):.1f}x one on a",
        "circuit that is up (median against median): the circuit's build, once per right, for as long",
        "as tor keeps the circuit (MaxCircuitDirtiness, 10 minutes). A new stream on a circuit that is",
        "up costs what a request on an open connection does: the request leaves with the stream's",
        "opening (optimistic data).",
    ]
    record(
        "Circuit per right",
        f"python bench/circuits.py --runs {args.runs} --hop-ms {args.hop_ms:g}",
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
