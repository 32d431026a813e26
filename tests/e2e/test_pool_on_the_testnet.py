"""A box's warm pool follows demand on the testnet: after a burst of sessions over Tor it
holds as many ready sandboxes, and the next burst runs in them, none started cold.

What the box runs is read where the operator would see it: the server's bubblewrap
children, and what each mounts at /function (a pooled sandbox's own empty directory under
``pool/``, filled when it is taken; a cold one, the function's code) and the size of its
/tmp (its shape: only a function of that shape can take it). The box is shared: other
tests' bursts leave the pool holding sandboxes of their shapes for minutes, so the test's
function has a shape of its own, and only what runs its code counts as the next burst.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from pathlib import Path

import pytest
from support import TIMEOUT

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.client.stream import SessionStream
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs
from bento.sandbox.pool import REFILL_AT_ONCE
from bento.sandbox.spec import Shape, Spec
from bento.testnet import Node

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]

# At most REFILL_AT_ONCE of the pool's sandboxes are still starting when /proc shows them, so
# once BURST wait there, the next burst's NEXT sessions all find a ready one.
NEXT = 4
BURST = NEXT + REFILL_AT_ONCE
# A /tmp of a size no other test's function asks for: a shape of this test's own, so that the
# pool's sandboxes of it were started for this test's burst, whatever other tests left on the
# shared box (the pool keeps what their bursts taught it, of their shapes, for minutes).
NEEDS = Needs(memory_mb=32, scratch_mb=6, instances=BURST)
HOLD = """
from bento.runtime import api

def hold():
    api.send("running")
    while api.recv() is not None:  # until the client closes its input
        pass
"""


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """One of the server's bubblewrap children, as /proc shows it."""

    scratch_bytes: int  # the size of its /tmp: its shape (no other mount differs here)
    function: Path  # the directory it mounts at /function

    @property
    def pooled(self) -> bool:
        return self.function.parent.name == "pool"

    @property
    def waiting(self) -> bool:
        """Pooled and not yet given a function: its directory is filled when it is taken."""
        try:
            return self.pooled and not any(self.function.iterdir())
        except OSError:  # it ended meanwhile
            return False

    def runs(self, code: str) -> bool:
        try:
            return any(code in file.read_text() for file in self.function.rglob("*.py"))
        except OSError:  # it ended meanwhile
            return False


def sandboxes(server: int) -> dict[int, Sandbox]:
    """The server's sandboxes, by bubblewrap pid."""
    found = {}
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    for child in map(int, children):
        with contextlib.suppress(OSError):  # it ended meanwhile
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if Path(argv[0].decode()).name == "bwrap":
                size = int(argv[argv.index(b"--size") + 1])  # the one tmpfs: /tmp
                function = Path(argv[argv.index(b"/function") - 1].decode())
                found[child] = Sandbox(size, function)
    return found


def waiting(server: int, shape: Shape) -> int:
    """Sandboxes waiting in the pool that a function of ``shape`` can take (all it has of its
    own is the size of its /tmp)."""
    found = sandboxes(server).values()
    return sum(s.waiting and s.scratch_bytes == shape.scratch_bytes for s in found)


def census(server: int) -> collections.Counter[tuple[bool, bool, int]]:
    return collections.Counter((s.pooled, s.waiting, s.scratch_bytes) for s in sandboxes(server).values())


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
    shape = Spec.of(NEEDS).shape
    assert waiting(server, shape) == 0, "the box already keeps sandboxes of this test's own shape"
    function = await box.deploy(HOLD.encode(), Manifest(name="pooled", needs=NEEDS))
    try:
        await ended(await opened(box, function, BURST))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while waiting(server, shape) < BURST:  # the server's state, in /proc: polled
            assert loop.time() < deadline, (
                f"{waiting(server, shape)} of this shape wait after a burst of {BURST}; the box runs "
                f"(pooled, waiting, /tmp bytes): {census(server)}"
            )
            await asyncio.sleep(0.2)

        # The first burst's sandboxes may not all have exited yet: only others run the next one's.
        first = {pid for pid, s in sandboxes(server).items() if s.runs(HOLD)}
        second = await opened(box, function, NEXT)
        try:
            ours = [s for pid, s in sandboxes(server).items() if pid not in first and s.runs(HOLD)]
            assert len(ours) == NEXT, f"{len(ours)} sandboxes run the next burst's {NEXT} sessions"
            cold = [s.function for s in ours if not s.pooled]
            assert cold == [], "a session of the next burst started its sandbox cold"
        finally:
            await ended(second)
    finally:
        await box.shutdown(function)
