"""The watched client: a tor of its own, with one guard, and the link to it.

The attacker of the paper sits on the link between the client's tor and its guard. On
the testnet every tor is on 127.0.0.1 (and tor never binds ``OutboundBindAddress`` for
loopback destinations), so the link is told apart by its ports: the guard's OR port, and
the local port of the victim's own connection to it, read from the kernel's socket table
for the victim's process (:func:`link_ports`). The victim uses one guard, as Tor clients
do, so a capture filter on those ports records that link and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from pathlib import Path

from bento.errors import BentoError
from bento.testnet import Testnet
from bento.testnet.config import dir_authority_line
from bento.testnet.state import Node, Role
from bento.tor.client_tor import ClientTor


def options() -> str:
    return (
        # One guard, as Tor clients have: the link the attacker watches.
        "UseEntryGuards 1\n"
        "NumEntryGuards 1\n"
        "NumDirectoryGuards 1\n"
        # As every testnet client: full descriptors, since a microdescriptor's exit-policy
        # summary covers public addresses only, and the testnet's exits serve loopback.
        "UseMicrodescriptors 0\n"
        "PathsNeededToBuildCircuits 0.67\n"
    )


async def start(testnet: Testnet, directory: Path) -> ClientTor:
    """Start the victim's tor and wait until it can build circuits."""
    authorities = [dir_authority_line(node).strip() for node in testnet.nodes if node.role is Role.AUTHORITY]
    tor = await ClientTor.start(directory, ["TestingTorNetwork 1", *authorities], options())
    try:
        await tor.wait_bootstrapped()
    except BaseException:
        await tor.stop()
        raise
    return tor


async def guard(tor: ClientTor, testnet: Testnet) -> Node:
    """The relay the victim's circuits go through first (ask after it has built one)."""
    circuits = await asyncio.to_thread(tor.controller.get_circuits)
    first = Counter(c.path[0][0] for c in circuits if c.status == "BUILT" and c.path)
    by_fingerprint = {n.fingerprint: n for n in testnet.nodes if n.fingerprint}
    for fingerprint, _ in first.most_common():
        if fingerprint in by_fingerprint and by_fingerprint[fingerprint].or_port:
            return by_fingerprint[fingerprint]
    raise BentoError("the victim's tor has built no circuit through a testnet relay yet")


def link_ports(pid: int, guard_port: int) -> set[int]:
    """Local ports of the established TCP connections of process ``pid`` to ``guard_port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)  # the header
            for row in rows:
                fields = row.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if inode in inodes and state == "01" and int(remote.rsplit(":", 1)[1], 16) == guard_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
