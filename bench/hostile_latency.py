"""A well-behaved function's latency while hostile functions attack the same box.

Starts a testnet with one Bento box, keeps a ping session open to it over Tor, measures
ping round trips idle, then again while other sessions on the same box spin the CPU,
fill memory, fork-bomb, flood output and fill scratch space, one wave after another.
Target (issue 4): under attack, the median round trip stays within 2x of idle.

    python bench/hostile_latency.py [--pings 40] [--waves 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs, SyscallProfile
from bento.testnet import Testnet, TestnetConfig
from record import record, summary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from hostile import HOSTILE, PING, ping_round_trips  # the attacks of the hostile-function tests

ATTACKS = ("spin", "memory_bomb", "fork_bomb", "flood", "fill_scratch", "open_files")
NEEDS = Needs(
    memory_mb=64, cpu_seconds=3, wall_seconds=8, processes=8, open_files=64, scratch_mb=4, output_mb=1,
    instances=len(ATTACKS), syscall_profiles=[SyscallProfile.COMPUTE, SyscallProfile.PROCESSES],
)  # fmt: skip


async def attack_waves(box: Box, hostile: Deployment, waves: int) -> None:
    for _ in range(waves):
        sessions = [await box.invoke(hostile, entry) for entry in ATTACKS]
        for session_id in sessions:
            async with await box.attach(hostile, session_id) as stream:
                while await stream.receive() is not None:
                    pass


async def measure(net: Testnet, count: int, waves: int) -> tuple[list[float], list[float]]:
    node = net.state.boxes[0]
    assert node.bento_onion is not None
    async with Box(node.bento_onion, socks=net.socks_address) as box:
        ping = await box.deploy(PING.encode(), Manifest(name="ping"))
        hostile = await box.deploy(HOSTILE.encode(), Manifest(name="hostile", needs=NEEDS))
        session_id = await box.invoke(ping, "ping")
        async with await box.attach(ping, session_id) as stream:
            await ping_round_trips(stream, 5)  # warm up the circuit
            idle = await ping_round_trips(stream, count)
            attacking = asyncio.ensure_future(attack_waves(box, hostile, waves))
            busy: list[float] = []
            while not attacking.done():
                busy += await ping_round_trips(stream, 1)
            await attacking
        await box.shutdown(ping)
        await box.shutdown(hostile)
    return idle, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pings", type=int, default=40)
    parser.add_argument("--waves", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        config = TestnetConfig(directory=Path(tmp) / "net", bento_boxes=1, owner_pid=os.getpid())
        with Testnet.start(config) as net:
            idle, busy = asyncio.run(measure(net, args.pings, args.waves))
    ratio = statistics.median(busy) / statistics.median(idle)
    verdict = "meets" if ratio <= 2 else "MISSES"
    record(
        "Latency under attack",
        f"python bench/hostile_latency.py --pings {args.pings} --waves {args.waves}",
        "Ping round trips over Tor to a well-behaved function on a box, idle and while sessions of "
        f"the same box run {', '.join(ATTACKS)} ({args.waves} waves):\n\n"
        f"- idle: {summary(idle, 'ms')}\n- under attack: {summary(busy, 'ms')}\n"
        f"- median under attack / median idle: {ratio:.2f}; target <= 2: {verdict}\n",
    )


if __name__ == "__main__":
    main()
