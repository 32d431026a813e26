"""One testnet for the whole session, with three Bento boxes, shared by every end-to-end test."""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest

from bento.client.box import Box
from bento.testnet import Node, Testnet, TestnetConfig, boxes

# The last box's server runs as this dedicated system user (made here when we are
# root), as operators run it: every limit must hold without root too. Run as a user, the
# whole testnet is unprivileged anyway.
BOX_USER = "bento-e2e"


def _box_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(BOX_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", BOX_USER],
            check=True, timeout=30,
        )  # fmt: skip
        account = pwd.getpwnam(BOX_USER)
    if boxes.interpreter_for(account.pw_uid) is None:
        # Neither our Python nor the system's of its minor version can import Bento as that
        # user (a Python, or a checkout, out of its reach): the last box runs as we do.
        # A warning, so that the run's summary says it: the non-root box was not tested.
        warnings.warn(
            f"the last box runs as root: {BOX_USER} cannot import Bento from here (give it search "
            f"permission on the checkout's parent directories), so the box of a dedicated user is untested",
            stacklevel=1,
        )
        return None
    return BOX_USER


@pytest.fixture(scope="session")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testnet]:
    config = TestnetConfig(
        directory=tmp_path_factory.mktemp("testnet"),
        bento_boxes=3,  # Shard spreads a file over three and loses one (test_shard_on_the_testnet)
        bootstrap_timeout=240,
        # If pytest is killed, every tor (and so every Bento server) exits with it.
        owner_pid=os.getpid(),
        box_user=_box_user(),
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
