"""A box filled to its cap at once, over Tor, and one more: every session it admits runs,
the rest are refused with box-full before anything starts (as root, and as a dedicated user).

Three functions share the cap, none asking for more than its share (a function alone may
hold at most instances_per_function, and one over its own limit is refused as busy, not
full); each session says it runs before it holds its instance; the box's warm pool is at
work all along, as on any box.
"""

from __future__ import annotations

import asyncio

import pytest
from support import TIMEOUT

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.client.stream import SessionStream
from bento.errors import Refused
from bento.protocol.errors import ErrorCode
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs
from bento.testnet import Node, Testnet
from conftest import BOX_USER

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]

HOLD = """
import time
from bento.runtime import api

def hold():
    api.send("running")
    time.sleep(300)
"""


@pytest.fixture(params=[0, -1], ids=["first-box", "box-of-a-dedicated-user"])
def box_node(request: pytest.FixtureRequest, testnet: Testnet) -> Node:
    """The first box and the last: its server runs as a dedicated user (when the suite runs as root)."""
    node = testnet.state.boxes[request.param]
    if request.param == -1 and node.bento_user is not None:
        assert node.bento_user == BOX_USER, "the last box runs as the dedicated user"
    return node


async def test_a_box_filled_at_once_runs_what_it_admits_and_refuses_the_rest(
    box: Box, box_node: Node
) -> None:
    policy = (await box.descriptor()).policy
    cap = policy.instances_total
    sharing = 3
    per_function = -(-(cap + 1) // sharing)  # the cap and one more, spread evenly
    assert per_function <= policy.instances_per_function, "the box's own cap is what binds"
    # Small instances, so that the box's memory is not what refuses first.
    needs = Needs(memory_mb=32, instances=per_function)
    assert cap * needs.memory_mb <= policy.total_memory_mb
    functions = [
        await box.deploy(HOLD.encode(), Manifest(name=f"fill{i}", needs=needs)) for i in range(sharing)
    ]
    streams: list[SessionStream] = []
    try:

        async def open_one(function: Deployment) -> SessionStream | Refused:
            try:
                stream = await box.start(function, "hold")
            except Refused as refused:
                return refused
            streams.append(stream)
            return stream

        answers = await asyncio.gather(*(open_one(functions[i % sharing]) for i in range(cap + 1)))

        refused = [a for a in answers if isinstance(a, Refused)]
        admitted = [a for a in answers if isinstance(a, SessionStream)]
        assert refused, "the box admitted more sessions than its cap"
        assert [(r.code, r.status, bool(r.fix)) for r in refused] == [(ErrorCode.BOX_FULL, 503, True)] * len(
            refused
        ), [str(r) for r in refused]
        first_words = await asyncio.gather(*(stream.receive() for stream in admitted))
        failed = [
            s.ended.reason if s.ended else repr(word)
            for s, word in zip(admitted, first_words, strict=True)
            if word != b"running"
        ]
        assert failed == [], "admitted, then failed"
        assert len(admitted) == cap, f"{len(admitted)} of {cap} admitted on an otherwise idle box"
    finally:
        for stream in streams:
            await stream.close()
        for function in functions:
            await box.shutdown(function)
