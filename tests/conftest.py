"""One testnet for the whole session, with three Bento boxes, shared by every end-to-end test.

The whole suite (``./scripts/test``) runs on two pytest-xdist workers (``-n 2 --dist
loadgroup``): every end-to-end test is in one xdist group, so one worker starts the one
testnet and runs them all, while the other runs the unit tests beside it. Session fixtures
run once per worker: only the worker given the end-to-end tests asks for ``testnet``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadGroupScheduling

from bento.client.box import Box
from bento.testnet import Node, Testnet, TestnetConfig
from plain_user import PLAIN_USER, make_plain_user, plain_user

# The last box's server runs as this dedicated system user (made here when we are
# root), as operators run it: every limit must hold without root too. Run as a user, the
# whole testnet is unprivileged anyway.
BOX_USER = PLAIN_USER
END_TO_END = Path(__file__).parent / "e2e"


class _EndToEndInOneGroup(LoadGroupScheduling):
    """``--dist loadgroup`` with every end-to-end test in one group, by its path: one worker
    runs them all on the one testnet. The biggest group is handed out first (xdist orders
    groups by size), so the long pole starts at once. (Not an ``xdist_group`` mark added at
    collection: xdist 3.8 names a mark's group in ``item._nodeid``, which pytest 9.2 no longer
    reads, so marked tests were spread over both workers, each starting a testnet.)"""

    def __init__(self, config: pytest.Config, log: Producer) -> None:
        super().__init__(config, log)
        self._end_to_end = f"{END_TO_END.relative_to(config.rootpath).as_posix()}/"

    def _split_scope(self, nodeid: str) -> str:
        return "testnet" if nodeid.startswith(self._end_to_end) else super()._split_scope(nodeid)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent where xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadGroupScheduling | None:
    return _EndToEndInOneGroup(config, log) if config.getvalue("dist") == "loadgroup" else None


@pytest.hookimpl(tryfirst=True)  # before xdist's controller starts its workers
def pytest_sessionstart(session: pytest.Session) -> None:
    """The dedicated user, made once, by the one process that is not a worker: unit tests act
    as it too, and may run before the end-to-end worker's testnet starts."""
    if not hasattr(session.config, "workerinput"):
        make_plain_user(BOX_USER)


def _box_user() -> str | None:
    user = plain_user(BOX_USER)
    if isinstance(user, str):
        if os.geteuid() == 0:
            # Neither our Python nor the system's of its minor version can import Bento as that
            # user (a Python, or a checkout, out of its reach): the last box runs as we do.
            # A warning, so that the run's summary says it: the non-root box was not tested.
            warnings.warn(
                f"the last box runs as root: {user} (give {BOX_USER} search permission on the "
                f"checkout's parent directories), so the box of a dedicated user is untested",
                stacklevel=1,
            )
        return None
    return user.name


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


@pytest.fixture(params=[0, -1], ids=["first-box", "box-of-a-dedicated-user"])
def each_box(request: pytest.FixtureRequest, testnet: Testnet) -> Node:
    """The first box and the last: its server runs as a dedicated user (when the suite runs as
    root). A module runs each test on both with ``box_node`` (and so ``box``) drawn from it."""
    node: Node = testnet.state.boxes[request.param]
    if request.param == -1 and node.bento_user is not None:
        assert node.bento_user == BOX_USER, "the last box runs as the dedicated user"
    return node


@pytest.fixture
async def box(testnet: Testnet, box_node: Node) -> AsyncIterator[Box]:
    """A client for the first box, over Tor (its onion service)."""
    assert box_node.bento_onion is not None
    async with Box(box_node.bento_onion, socks=testnet.socks_address) as client:
        yield client


@pytest.fixture
def cli_env(testnet: Testnet, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``bento`` command on the testnet, with a keyring of the test's own."""
    return {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "keyring.json")}


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*ARGS, stdin=None)`` runs ``bento ARGS`` on the testnet, in the test's tmp_path."""

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bento", *args],
            env=cli_env, input=stdin, capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )  # fmt: skip

    return run
