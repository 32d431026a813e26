"""A function asks the broker for each of its box's own listeners, in every spelling: all refused.

The box is a real testnet box (its relay's control, OR, directory and SOCKS ports, and the
Bento API); the function runs in its sandbox and asks through its real broker socket. A
site on the same loopback, on a port that is not the box's, is granted: the refusals are
the gate's judgement, not a broker that refuses everything.
"""

from __future__ import annotations

import pytest
from support import TIMEOUT, run

from bento.client.box import Box
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs
from bento.testnet import Node
from bento.testnet.boxes import server_status
from bento.testnet.site import LocalSite

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]

ASK = """
from bento.runtime import api

def ask(targets):
    out = {}
    for host, port in targets:
        try:
            sock = api.connect(host, port, timeout=5)
        except Exception as exc:
            out[f"{host} {port}"] = f"{type(exc).__name__}: {exc}"
        else:
            sock.close()
            out[f"{host} {port}"] = "ALLOWED"
    return out
"""

SPELLINGS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0.0.0.0",
    "localhost",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::",
]


async def test_the_broker_refuses_every_spelling_of_every_own_listener(box: Box, box_node: Node) -> None:
    status = server_status(box_node)
    api_port = int(str(status["api"]).rsplit(":", 1)[1])
    ports = [box_node.control_port, api_port] + [
        p for p in (box_node.or_port, box_node.dir_port, box_node.socks_port) if p
    ]
    deployment = await box.deploy(ASK.encode(), Manifest(name="ask", needs=Needs(network=True)))
    try:
        async with LocalSite({"/": b"not ours"}) as site:
            site_port = site.port
            targets = [[host, port] for port in ports for host in SPELLINGS] + [["127.0.0.1", site_port]]
            _, ended = await run(box, deployment, "ask", targets)
        assert ended.state is SessionState.COMPLETED, ended.reason
        outcomes = dict(ended.result)
        assert outcomes.pop(f"127.0.0.1 {site_port}") == "ALLOWED", "a port not of the box's is granted"
        assert len(outcomes) == len(ports) * len(SPELLINGS)
        for target, outcome in outcomes.items():
            assert outcome.startswith("PermissionError: Bento broker"), (target, outcome)
            assert "own services" in outcome or "not a destination" in outcome, (target, outcome)
        assert ended.usage.network_denied == len(outcomes)
        assert ended.usage.network_granted == 1
    finally:
        await box.shutdown(deployment)
