"""Background processes that outlive the command which started them.

A testnet started by ``bento testnet up`` keeps running after that command exits, and a
later ``bento testnet down`` (another process) must stop exactly those processes and no
others. So each process is recorded by pid together with a *marker*, a string on its
command line (the path of its own config file), and is only ever signalled after
``/proc/PID/cmdline`` still shows that marker: a recycled pid is never killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessRecord:
    """Enough to find a detached process again: its pid and the marker on its command line."""

    pid: int
    marker: str

    def alive(self) -> bool:
        """True while the process runs (a zombie counts as dead) and is still ours."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        # The state letter follows the parenthesised command name.
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X") and self.marker.encode() in cmdline

    def stop(self, *, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; harmless if already gone."""
        try:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
                if not self.alive():
                    return
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and self.alive():
                    time.sleep(0.05)
        finally:
            _reap(self.pid, patience=1.0)  # if it was our child, leave no zombie


def _reap(pid: int, patience: float = 0.0) -> None:
    """Collect an exited child of ours so it does not linger as a zombie.

    A dying process loses its command line before it becomes a zombie, so a caller that
    just saw it go may wait up to ``patience`` seconds for it to become reapable.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not our child, or already reaped
        if done or time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def spawn_detached(argv: Sequence[str], *, log: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in a new session, output appended to ``log``; returns its pid.

    The new session keeps the process alive when the starting command exits and out of
    reach of a Ctrl-C meant for that command.
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    wait_for_exec(proc.pid, argv[0])
    return proc.pid


def wait_for_exec(pid: int, program: str, patience: float = 5.0) -> None:
    """Wait until ``pid`` runs ``program``, or what ``program`` ran in its place: Popen can
    return before the child's exec shows in /proc, and until then the child still carries
    its parent's command line. A program may exec another at once (setpriv execs the
    Python it drops privileges for): any command line but the parent's means it has run.
    (Waiting for ``program`` by name alone cost each start of a box run by a dedicated
    user the whole ``patience``.)"""
    parents = Path("/proc/self/cmdline").read_bytes()
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return  # already gone: whoever checks on it will see that
        if cmdline.startswith(program.encode() + b"\0") or (cmdline and cmdline != parents):
            return
        time.sleep(0.002)


def exit_status(pid: int) -> int | None:
    """The exit status of our child ``pid`` if it has exited, else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


OWNER_ENV = "BENTO_OWNER_PID"  # a detached helper given this stops when that process ends


def owned_env(owner: int | None) -> dict[str, str] | None:
    """The environment for a detached helper that must not outlive ``owner`` (None: no owner)."""
    return None if owner is None else {**os.environ, OWNER_ENV: str(owner)}


def stop_with_owner(loop: asyncio.AbstractEventLoop, stop: Callable[[], object]) -> None:
    """Call ``stop`` when the process named by $BENTO_OWNER_PID ends (at once if it has).

    What tor does with ``__OwningControllerProcess``, for the testnet's own servers: a
    test session or a bench killed outright leaves no nameserver or web server behind.
    Linux's pidfd becomes readable when the process exits; no polling."""
    owner = os.environ.get(OWNER_ENV)
    if not owner:
        return
    try:
        pidfd = os.pidfd_open(int(owner))
    except ProcessLookupError:
        loop.call_soon(stop)
        return

    def ended() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        stop()

    loop.add_reader(pidfd, ended)


def serve_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` until it returns, or until SIGTERM or SIGINT cancels it, or its owner
    ($BENTO_OWNER_PID) ends: a clean stop."""

    async def run() -> None:
        task = asyncio.create_task(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        stop_with_owner(loop, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
