"""One testnet for the whole session, with two Bento boxes, shared by every end-to-end test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from bento.client.box import Box
from bento.testnet import Node, Testnet, TestnetConfig


@pytest.fixture(scope="session")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testnet]:
    config = TestnetConfig(
        directory=tmp_path_factory.mktemp("testnet"),
        bento_boxes=2,
        bootstrap_timeout=240,
        # If pytest is killed, every tor (and so every Bento server) exits with it.
        owner_pid=os.getpid(),
    )
    with Testnet.start(config) as net:
        yield net


@pytest.fixture(scope="session")
def box_node(testnet: Testnet) -> Node:
    """The first Bento box (on relay exit0)."""
    return testnet.state.boxes[0]


@pytest.fixture
async def box(testnet: Testnet, box_node: Node) -> AsyncIterator[Box]:
    """A client for the first box, over Tor (its onion service)."""
    assert box_node.bento_onion is not None
    async with Box(box_node.bento_onion, socks=testnet.socks_address) as client:
        yield client
