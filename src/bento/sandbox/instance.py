"""A started sandbox: its process, its two sockets, its exit and what it used."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bento.protocol.frames import HEADER, Frame, FrameError, decode_header
from bento.sandbox import cgroups
from bento.sandbox.spec import Spec


@dataclass
class Usage:
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0


@dataclass
class Exited:
    returncode: int
    usage: Usage = field(default_factory=Usage)
    oom_killed: bool = False


class Instance:
    """A sandboxed process: its stderr, its exit, and what it used."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        spec: Spec,
        group: cgroups.Group | None,
        release: Callable[[], None],
        channel: socket.socket,
        broker: socket.socket,
        hold: int | None = None,
    ) -> None:
        """``hold``: our end of the pipe bubblewrap waits on before it starts (see :meth:`go`)."""
        self.process = process
        self.pid = process.pid
        self.spec = spec  # what confines it now (a pooled one's is lowered when it is taken)
        self.group = group
        self.channel = channel  # our ends of its two sockets
        self.broker = broker
        self.slot_dir: Path | None = None  # a pooled sandbox's /function, filled when taken
        self.confinement: dict[str, object] = {}  # the START frame's part: what it applies to itself
        # Where no cgroup counts them: the most the watchdog saw (a killed process's CPU time
        # never reaches our rusage, as nobody waits for it).
        self.peak_resident = 0
        self.cpu_seen = 0.0
        self.over_memory = False  # killed by the memory watchdog
        self._release = release
        self._hold = hold
        self._exited: asyncio.Future[Exited] = asyncio.get_running_loop().create_future()
        self._cleaning: asyncio.Task[None] | None = None  # removing the slot's code, after exit
        self._pidfd = os.pidfd_open(self.pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, rusage = self.pid, 0, None
        if pid == 0:
            return
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._let_go(b"")
        self.process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never reaps it again
        # Not ru_maxrss: the outer process was forked from the server and its mark holds ours.
        usage = Usage(self.cpu_seen, self.peak_resident)
        if rusage is not None:
            usage.cpu_seconds = max(usage.cpu_seconds, rusage.ru_utime + rusage.ru_stime)
        oom = self.over_memory
        if self.group is not None:
            usage.peak_memory_bytes = self.group.peak_memory() or usage.peak_memory_bytes
            usage.cpu_seconds = max(usage.cpu_seconds, self.group.cpu_seconds() or 0.0)
            oom = oom or self.group.oom_killed()
        if self.process.returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            # The kernel sends SIGXCPU when its CPU time reaches the limit; samples lag behind,
            # and the group's count too, now and then (2.498 s of a 3 s limit seen, loaded).
            usage.cpu_seconds = max(usage.cpu_seconds, float(self.spec.cpu_seconds))
        self._release()
        exited = Exited(self.process.returncode, usage, oom)
        # The slot's copy of the code is removed off the event loop; the instance has exited
        # once it is gone, so whoever waits for the instance waits for this too.
        self._cleaning = loop.create_task(self._remove_slot(exited))

    async def _remove_slot(self, exited: Exited) -> None:
        try:
            if self.slot_dir is not None:
                await asyncio.to_thread(shutil.rmtree, self.slot_dir, True)
        finally:
            if not self._exited.done():
                self._exited.set_result(exited)

    def go(self) -> None:
        """Let a held sandbox start (a byte on its hold); one never held has started already."""
        self._let_go(b"\0")

    def _let_go(self, byte: bytes) -> None:
        if self._hold is None:
            return
        if byte:
            with contextlib.suppress(OSError):  # it died meanwhile: nothing waits
                os.write(self._hold, byte)
        os.close(self._hold)  # an end of file lets it go too, but it has exited by then
        self._hold = None

    async def wait(self) -> Exited:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """Kill the whole sandbox (bubblewrap takes everything inside with it)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def kill_for_memory(self) -> None:
        self.over_memory = True
        self.kill()


async def ready(instance: Instance, patience: float = 30.0) -> bool:
    """Wait for the runtime's READY frame, so that a pooled sandbox is truly warm."""
    loop = asyncio.get_running_loop()
    instance.channel.setblocking(False)
    header = b""
    try:
        async with asyncio.timeout(patience):
            while len(header) < HEADER.size:
                chunk = await loop.sock_recv(instance.channel, HEADER.size - len(header))
                if not chunk:
                    return False
                header += chunk
    except (TimeoutError, OSError):
        return False
    try:
        return decode_header(header) == (Frame.READY, 0)
    except FrameError:
        return False
