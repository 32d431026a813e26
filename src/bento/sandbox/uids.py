"""Blocks of instance uids, claimed so that two Bento servers on one host never share a uid.

A claim is a lock file per block, held with flock(2) for the server's life: the kernel
drops the lock when the server dies, however it dies, so a dead server's block is free
at once and the next claimer takes it over atomically. Stale files are removed by the
next start and by ``bento testnet down`` (:func:`clean_stale`), only while holding their
lock; a claimer checks after locking that its file is still the one at the path.

A server that dies (SIGKILL, OOM) can leave processes under its uids: a sandbox caught half
set up, whose bubblewrap child waits on its dead parent's eventfd for ever (``--die-with-
parent`` is armed only later, just before exec). The next server to claim the block first
kills every process still running as one of its uids (:meth:`Claim.evict_leftovers`), so a
new instance never shares a uid with a stranger's leftover: once, before its first sandbox
starts (:meth:`Claim.ready`, which the sandbox host awaits), on the event loop, never with a
blocking wait in the host's constructor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from pathlib import Path

UID_BASE = 200_000  # instances run as uids from here up, one uid each
UID_BLOCK = 4096  # uids claimed by one server
BLOCKS = 1000
CLAIMS = Path("/run/bento-uids")
log = logging.getLogger(__name__)  # root's: only a server running as root claims uids


class NoFreeBlock(Exception):
    pass


class Claim:
    """A held block of uids; :meth:`release` (or the server's death) frees it."""

    def __init__(self, block: int, fd: int, path: Path) -> None:
        self.base = UID_BASE + block * UID_BLOCK
        self._fd = fd
        self._path = path
        self._evicting = asyncio.Lock()
        self._evicted = False

    async def ready(self) -> None:
        """Evict the leftovers once, before the first of this block's uids is used."""
        async with self._evicting:
            if not self._evicted:
                await self.evict_leftovers()
                self._evicted = True

    async def evict_leftovers(self, *, patience: float = 5.0, proc: Path = Path("/proc")) -> int:
        """Kill every process running as one of this block's uids (a dead server's leftovers)
        and wait, at most ``patience`` seconds, until none is left; return how many there were.

        Only the claim's holder may call it: the uids are its own from the claim on.
        """
        found: set[int] = set()
        deadline = time.monotonic() + patience
        block = range(self.base, self.base + UID_BLOCK)
        while pids := await asyncio.to_thread(_running_as, block, proc):  # every /proc/*/status: a while
            found |= pids
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)  # the kernel takes a moment to tear a killed process down
        if found:
            log.warning(
                "killed %d processes left under sandbox uids %d+ by a server that died", len(found), self.base
            )
        return len(found)

    def release(self) -> None:
        if self._fd < 0:
            return
        self._path.unlink(missing_ok=True)  # still locked: nobody holds this file but us
        os.close(self._fd)
        self._fd = -1


def claim(directory: Path = CLAIMS) -> Claim:
    """The lowest free block of uids."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    clean_stale(directory)
    for block in range(BLOCKS):
        path = directory / str(block)
        fd = _lock(path, create=True)
        if fd is not None:
            os.write(fd, f"{os.getpid()}\n".encode())  # for the curious operator only
            return Claim(block, fd, path)
    raise NoFreeBlock(f"no free block of sandbox uids in {directory} ({BLOCKS} Bento servers on one host?)")


def clean_stale(directory: Path = CLAIMS) -> int:
    """Remove the claims of servers that are gone; return how many."""
    removed = 0
    try:
        claims = list(directory.iterdir())
    except OSError:  # none yet, or not ours to read (only a server run as root claims uids)
        return removed
    for path in claims:
        fd = _lock(path, create=False)
        if fd is not None:
            path.unlink(missing_ok=True)
            os.close(fd)
            removed += 1
    return removed


def _running_as(uids: range, proc: Path) -> set[int]:
    """The processes whose real, effective, saved or file-system uid is in ``uids``; not
    zombies, which run nothing and hold nothing but their entry, until their parent reaps them."""
    pids = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("State:") and line.split()[1:2] == ["Z"]:
                break
            if line.startswith("Uid:"):
                if any(int(uid) in uids for uid in line.split()[1:]):
                    pids.add(int(entry.name))
                break
    return pids


def _lock(path: Path, *, create: bool) -> int | None:
    """An fd holding the lock of the file at ``path``, if nobody holds it and it is still there."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
            raise FileNotFoundError(path)  # removed (and maybe re-created) while we locked it
        os.ftruncate(fd, 0)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        return None
    return fd
