"""A box's warm pool follows demand on the testnet: after a burst of sessions over Tor it
holds as many ready sandboxes, and the next burst runs in them, none started cold.

What the box runs is read where the operator would see it: the server's bubblewrap
children, and what each mounts at /function (a pooled sandbox's own empty directory under
``pool/``, filled when it is taken; a cold one, the function's code).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from support import TIMEOUT

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.client.stream import SessionStream
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs
from bento.sandbox.pool import REFILL_AT_ONCE
from bento.testnet import Node

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]

# At most REFILL_AT_ONCE of the pool's sandboxes are still starting when /proc shows them, so
# once BURST wait there, the next burst's NEXT sessions all find a ready one.
NEXT = 4
BURST = NEXT + REFILL_AT_ONCE
HOLD = """
from bento.runtime import api

def hold():
    api.send("running")
    while api.recv() is not None:  # until the client closes its input
        pass
"""


def sandboxes(server: int) -> dict[int, bool]:
    """The server's sandboxes: bubblewrap pid -> whether its /function is a pooled one's."""
    found = {}
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    for child in map(int, children):
        with contextlib.suppress(OSError):  # it ended meanwhile
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if Path(argv[0].decode()).name == "bwrap":
                function = argv[argv.index(b"/function") - 1]
                found[child] = b"/pool/" in function
    return found


async def opened(box: Box, function: Deployment, count: int) -> list[SessionStream]:
    async with asyncio.timeout(TIMEOUT):
        streams = await asyncio.gather(*(box.start(function, "hold") for _ in range(count)))
        words = await asyncio.gather(*(s.receive() for s in streams))
    assert words == [b"running"] * count, [s.ended for s in streams]
    return streams


async def ended(streams: list[SessionStream]) -> None:
    async def end(stream: SessionStream) -> None:
        await stream.close_input()
        while await stream.receive() is not None:
            pass
        await stream.close()

    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(end(s) for s in streams))


async def test_a_burst_over_tor_grows_the_pool_and_the_next_burst_runs_in_it(
    box: Box, box_node: Node
) -> None:
    server = box_node.bento_pid
    assert server is not None and box_node.bento_user is None, "run by root: its pid is the server's"
    function = await box.deploy(
        HOLD.encode(), Manifest(name="pooled", needs=Needs(memory_mb=32, instances=BURST))
    )
    try:
        await ended(await opened(box, function, BURST))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while sum(sandboxes(server).values()) < BURST:  # the server's state, in /proc: polled
            assert loop.time() < deadline, f"the pool holds {sandboxes(server)} after a burst of {BURST}"
            await asyncio.sleep(0.2)

        there = set(sandboxes(server))  # and whatever other tests' sessions still run
        second = await opened(box, function, NEXT)
        try:
            cold = [pid for pid, pooled in sandboxes(server).items() if pid not in there and not pooled]
            assert cold == [], "a session of the next burst started its sandbox cold"
        finally:
            await ended(second)
    finally:
        await box.shutdown(function)
