"""The watched client: a tor of its own, and its link to the Tor network.

The attacker of the paper sits on the user's link: he sees every connection her tor
holds to the network. On the testnet every tor is on 127.0.0.1 (and tor never binds
``OutboundBindAddress`` for loopback destinations), so those connections are told apart
by their ports: the local ports of the victim's connections to relays' OR ports, read from
the kernel's socket table for the victim's process (:func:`links`).

All of them, not only the guard's: tor never puts one relay twice in a circuit, so a
client whose guard is also the exit it picks builds that circuit through another guard.
On the live network, with thousands of exits, that is rare; on a testnet with three exits
it was a third of the circuits, and a capture of the guard's link alone missed their
cells. (Naming a non-exit guard with ``EntryNodes`` avoids it too, but tor's restricted
guard sample sometimes stays empty on a young testnet, and then no circuit is built.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from bento.errors import BentoError
from bento.testnet import Testnet
from bento.testnet.config import dir_authority_line
from bento.testnet.state import Node, Role
from bento.tor.client_tor import ClientTor


def options(guard: Node | None = None) -> str:
    return (
        # One guard, as Tor clients have (named, if ``guard`` is given).
        (f"EntryNodes ${guard.fingerprint}\n" if guard is not None else "") + "UseEntryGuards 1\n"
        "NumEntryGuards 1\n"
        "NumDirectoryGuards 1\n"
        # No conflux: it splits a stream over two circuits, whose second leg may open a
        # link of its own mid-visit (the demo once recorded half a page); the paper's Tor
        # had none.
        "ConfluxEnabled 0\n"
        # As every testnet client: full descriptors, since a microdescriptor's exit-policy
        # summary covers public addresses only, and the testnet's exits serve loopback.
        "UseMicrodescriptors 0\n"
        "PathsNeededToBuildCircuits 0.67\n"
    )


def guards(testnet: Testnet) -> list[Node]:
    """The relays a victim may take as its guard: those that are not exits."""
    found = [n for n in testnet.nodes if n.role is Role.RELAY and n.fingerprint and n.or_port]
    if not found:
        raise BentoError(
            "the testnet has no relay that is not an exit, to be the victim's guard",
            fix="start it with more relays than exits (bento testnet up --relays 5 --exits 3)",
        )
    return found


async def start(testnet: Testnet, directory: Path, guard: Node | None = None) -> ClientTor:
    """Start a victim's tor (with ``guard`` as its guard, if given: see :func:`check_guard`)
    and wait until it can build circuits."""
    authorities = [dir_authority_line(node).strip() for node in testnet.nodes if node.role is Role.AUTHORITY]
    tor = await ClientTor.start(directory, ["TestingTorNetwork 1", *authorities], options(guard))
    try:
        await tor.wait_bootstrapped()
    except BaseException:
        await tor.stop()
        raise
    return tor


async def check_guard(tor: ClientTor, guard: Node) -> None:
    """Raise unless every circuit the victim has built starts at ``guard`` (ask after one).

    One-hop circuits are left out: they are tor's own directory fetches straight from an
    authority, which carry no page.
    """
    circuits = await asyncio.to_thread(tor.controller.get_circuits)
    built = [c for c in circuits if c.status == "BUILT" and len(c.path) > 1]
    if not built:
        raise BentoError("the victim's tor has built no circuit yet")
    elsewhere = sorted({c.path[0][1] or c.path[0][0] for c in built} - {guard.nickname, guard.fingerprint})
    if elsewhere:
        raise BentoError(
            f"some of the victim's circuits start at {', '.join(elsewhere)}, "
            f"not at its guard {guard.nickname}",
            fix="see the victim's notice.log",
        )


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


def links(pid: int, relay_ports: list[int]) -> set[int]:
    """Local ports of every connection process ``pid`` holds to a relay: the user's link."""
    return {port for relay in relay_ports for port in link_ports(pid, relay)}
