"""What the server watches from /proc: its instances' memory, and the orphans of killed sandboxes.

Where no cgroup of ours caps an instance's memory, RLIMIT_DATA caps each of its
processes, and :func:`resident` sums the anonymous resident memory of all of them, so
that the server can kill an instance whose processes together hold more than its
limit. All reads are of small procfs files and never block.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (through /proc/PID/task/TID/children)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 100_000:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo.extend(int(child) for child in (task / "children").read_text().split())
    return found


@dataclass
class Sample:
    anonymous: int = 0  # bytes of anonymous resident memory, all processes together
    highest: int = 0  # the highest resident set (VmHWM) any of them has had, in bytes
    cpu_seconds: float = 0.0  # used by them and by their children they have waited for


def sample(pid: int) -> Sample:
    """What ``pid`` and its descendants use now.

    Anonymous: resident minus file-backed and shared pages (statm), what the processes
    allocated. Pages a fork shares copy-on-write count once per process, so this errs
    high. The outer process (the server's child) is left out of the high-water mark: it
    was forked from the server, and its mark (like its ru_maxrss) holds the server's.
    """
    found = Sample()
    for each in descendants(pid):
        try:
            statm = Path(f"/proc/{each}/statm").read_text().split()
            stat = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{each}/status").read_text() if each != pid else ""
        except (OSError, IndexError):
            continue
        found.anonymous += (int(statm[1]) - int(statm[2])) * _PAGE
        found.cpu_seconds += sum(int(ticks) for ticks in stat[11:15]) / _TICKS  # utime stime cutime cstime
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                found.highest = max(found.highest, int(line.split()[1]) * 1024)
    return found


def reap_orphans(tracked: set[int]) -> int:
    """Reap our zombie children that no Instance waits for; return how many orphaned
    sandbox processes (bubblewrap) are still dying.

    Only our own children are read (the kernel lists each thread's in
    /proc/self/task/TID/children), not every process of the host: the scan costs the
    same on a busy host as on an idle one.
    """
    dying = 0
    for child in _children() - tracked:
        try:
            name, rest = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)
            state = rest.split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)
        elif name.endswith("(bwrap"):
            dying += 1
    return dying


def _children() -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def become_subreaper() -> None:
    """Inherit the orphans of our sandboxes, so that we can reap them (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def userns_nproc() -> bool:
    """Does this kernel count RLIMIT_NPROC per user namespace (ucounts, Linux 5.14)?"""
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (5, 14)
    except (IndexError, ValueError):
        return False
