"""The server's own limit on open files, raised to what its instances need.

Each running instance holds descriptors in the server (its two sockets, its exit's pidfd,
its stderr, its cgroup's OOM counter, the session's connection from Tor, what its broker
hands over), so a box of hundreds of instances needs thousands; a process started by
systemd gets a soft limit of 1024, and the 150th session or so would fail with EMFILE.
The soft limit is raised to what ``instances_total`` needs, up to the hard limit, which
only the operator can raise (``LimitNOFILE=`` in the unit; contrib/systemd has one).

>>> needed(500)  # a box of 500 instances
9024
"""

from __future__ import annotations

import resource

PER_INSTANCE = 16  # descriptors the server may hold for one instance and its session, with room
BASE = 1024  # the server's own: listeners, Tor's control port, storage, clients waiting to be admitted


def needed(instances_total: int) -> int:
    return BASE + PER_INSTANCE * instances_total


def raise_for(instances_total: int) -> str | None:
    """Raise the soft limit towards :func:`needed`; a warning if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed(instances_total)
    if soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < want:
        return (
            f"open files: the hard limit is {hard}, and instances_total = {instances_total} may need "
            f"{want}; sessions past about {(soft - BASE) // PER_INSTANCE} at once may fail "
            f"(raise it: LimitNOFILE={want} in the systemd unit, or ulimit -Hn)"
        )
    return None
