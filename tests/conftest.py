"""One testnet for the whole session, shared by every end-to-end test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bento.tor.testnet import Testnet, TestnetConfig


@pytest.fixture(scope="session")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testnet]:
    config = TestnetConfig(
        directory=tmp_path_factory.mktemp("testnet"),
        bootstrap_timeout=180,
        # If pytest is killed, every tor exits with it.
        owner_pid=os.getpid(),
    )
    with Testnet.start(config) as net:
        yield net
