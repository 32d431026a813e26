"""Where a testnet lives: its directory, and each node's nickname, role, data directory and ports."""

from __future__ import annotations

import errno
import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bento.testnet.config import TestnetConfig
from bento.testnet.errors import TestnetError
from bento.testnet.state import Node, Role


def default_directory() -> Path:
    """``$BENTO_TESTNET_DIR``, else ``$XDG_STATE_HOME/bento/testnet`` (~/.local/state/...)."""
    if env := os.environ.get("BENTO_TESTNET_DIR"):
        return Path(env)
    state_home = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state_home) / "bento" / "testnet"


LOWEST_PORT = 10_000  # the testnet's ports are drawn from here up to the kernel's ephemeral range


def free_ports(count: int) -> Iterator[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held open together, then freed).

    Drawn below the kernel's ephemeral range: the kernel gives none of those to a socket bound
    to port 0 nor to an outgoing connection, so none is taken between now and its tor's bind
    by the other work on the host (the unit tests run beside the suite's testnet).
    """
    below = list(range(LOWEST_PORT, _ephemeral_ports().start))
    random.shuffle(below)
    with ExitStack() as stack:
        ports: list[int] = []
        for port in below:
            if len(ports) == count:
                break
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use
                continue
            ports.append(port)
        while len(ports) < count:  # a host whose ephemeral range leaves too few below it
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return iter(ports)


# An abstract Unix socket's name is one per host (per network namespace), needs no file that
# another user may own, and is let go by the kernel when its holder dies, even by SIGKILL.
_CLAIM = b"\0bento-testnet-port-claim"


@contextmanager
def port_claim(deadline: float) -> Iterator[None]:
    """Hold the host's one claim on drawing testnet ports until the body has bound them.

    ``free_ports`` frees the ports it found before tor binds them; two testnets starting at
    once could each draw a port the other is about to bind (seen as a tor that exits with
    "Address already in use"). The claim makes that window one testnet's at a time.
    """
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            try:
                claim.bind(_CLAIM)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                if time.monotonic() > deadline:
                    raise TestnetError(
                        "another testnet on this host held the claim on new ports until the deadline",
                        fix="let the other `bento testnet up` finish starting, then run this one again",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        claim.close()


def _ephemeral_ports() -> range:
    """The ports the kernel picks from for port 0 and outgoing connections (Linux's default)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def plan(directory: Path, config: TestnetConfig) -> list[Node]:
    """Nicknames, roles, data directories and ports of every node."""
    roles = (
        [(Role.AUTHORITY, f"auth{i}") for i in range(config.authorities)]
        + [(Role.EXIT, f"exit{i}") for i in range(config.exits)]
        + [(Role.RELAY, f"relay{i}") for i in range(config.relays - config.exits)]
        + [(Role.CLIENT, "client")]
    )
    # Every port in one call: ports from two calls may coincide, as the first call's are
    # free again by the second (a relay once got the same port for control and OR).
    ports = free_ports(4 * len(roles))
    nodes = []
    for role, nickname in roles:
        data_dir = directory / nickname
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        node = Node(role=role, nickname=nickname, data_dir=str(data_dir), control_port=next(ports))
        if role is Role.CLIENT:
            node.socks_port = next(ports)
        else:
            node.or_port = next(ports)
            if config.hop_delay_ms > 0:  # tor's own port, behind the delaying link on or_port
                node.or_listen_port = next(ports)
        if role is Role.AUTHORITY:
            node.dir_port = next(ports)
        nodes.append(node)
    return nodes


def box_nodes(nodes: list[Node], count: int) -> list[Node]:
    """The relays that run Bento: exits first (a box that is an exit can fetch for users)."""
    candidates = [n for n in nodes if n.role is Role.EXIT] + [n for n in nodes if n.role is Role.RELAY]
    return candidates[:count]
