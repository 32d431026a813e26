"""A private Tor network of real ``tor`` processes on 127.0.0.1.

Directory authorities, relays (some of them exits to loopback) and a client, with
timings shortened so that a network is usable within seconds. The demo, the tests and
the benchmarks all run on it; nothing outside this package assumes it.

Starting one takes a minute of real tor processes, so the example is skipped as a doctest;
tests/conftest.py does exactly this for the end-to-end suite:

>>> from pathlib import Path
>>> with Testnet.start(TestnetConfig(directory=Path("/tmp/net"))) as net:  # doctest: +SKIP
...     print(net.socks_address)
"""

from bento.testnet.config import TestnetConfig
from bento.testnet.errors import TestnetError
from bento.testnet.network import Testnet
from bento.testnet.plan import default_directory
from bento.testnet.state import Node, Role, TestnetState

__all__ = [
    "Node",
    "Role",
    "Testnet",
    "TestnetConfig",
    "TestnetError",
    "TestnetState",
    "default_directory",
]
