"""Memory, process and CPU caps through the kernel's cgroups, v1 or v2, where we may use them.

Bento makes one group for itself under the cgroup it was started in, holding the caps on
all of Bento together (so the relay never starves), and one child group per instance.
A host that gives us no writable cgroups still runs Bento: the rlimits remain, and the
descriptor says which limits are enforced here.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")  # what Bento caps on cgroup v2
LEAF = "bento-server"  # on v2, the server's own group beside those it makes (see _leave_for_a_leaf)
CPU_PERIOD_US = 100_000
ADMIT_PATIENCE = 30.0  # seconds for bubblewrap to name its sandbox's process (it takes milliseconds)


def _own_paths() -> dict[str, str]:
    """Controller name (or "" for v2) -> our cgroup path, from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


@dataclass
class Group:
    """One cgroup, spread over the controller hierarchies that hold it (v1) or one (v2)."""

    version: int
    dirs: dict[str, Path]  # controller -> directory ("unified" for v2)
    # The OOM counter's file, open while the group lives (None: not yet; -1: removed).
    _events_fd: int | None = field(default=None, init=False, repr=False, compare=False)

    def _write(self, controller: str, name: str, value: str) -> None:
        directory = self.dirs.get(controller) or self.dirs.get("unified")
        if directory is not None:
            (directory / name).write_text(value)

    def _read(self, controller: str, name: str) -> str | None:
        directory = self.dirs.get(controller) or self.dirs.get("unified")
        try:
            return (directory / name).read_text() if directory else None
        except OSError:
            return None

    def limit(self, *, memory_bytes: int, pids: int, cpus: float | None = None) -> None:
        if self.version == 2:
            self._write("unified", "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                self._write("unified", "memory.swap.max", "0")
            with contextlib.suppress(OSError):  # out of memory: kill every process of the group
                self._write("unified", "memory.oom.group", "1")
            self._write("unified", "pids.max", str(pids))
            if cpus is not None:
                self._write("unified", "cpu.max", f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        else:
            self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
            with contextlib.suppress(OSError):  # only where swap accounting is on
                self._write("memory", "memory.memsw.limit_in_bytes", str(memory_bytes))
            self._write("pids", "pids.max", str(pids))
            if cpus is not None and "cpu" in self.dirs:
                self._write("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US))
                self._write("cpu", "cpu.cfs_quota_us", str(int(cpus * CPU_PERIOD_US)))

    def admit(self, pid: int) -> None:
        """Move process ``pid`` into this group, in every hierarchy; its children so far stay.

        It blocks: the first move after a quiet spell waits for an RCU grace period in the
        kernel (10 to 15 ms on the machines of docs/benchmarks.md), so call it off the event loop.
        """
        for directory in self.dirs.values():
            (directory / "cgroup.procs").write_text(str(pid))

    def peak_memory(self) -> int | None:
        value = self._read("memory", "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(value) if value and value.strip().isdigit() else None

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process that was ever in the group."""
        if self.version == 2:
            for line in (self._read("unified", "cpu.stat") or "").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec" and value.strip().isdigit():
                    return int(value) / 1e6
            return None
        if "cpuacct" not in self.dirs:
            return None
        usage = self._read("cpuacct", "cpuacct.usage")
        return int(usage) / 1e9 if usage and usage.strip().isdigit() else None

    def oom_killed(self) -> bool:
        """Has the kernel killed a process of the group for want of memory?

        Cheap enough to ask often (the watchdog asks of every instance ten times a second):
        the counter's file stays open, and each question is one read at offset 0 (which has
        the kernel render the file afresh), with no path to resolve.
        """
        text = self._events()
        if self.version == 1 and "oom_kill" not in text:
            # Kernels before 4.13 count no kills: hitting the limit is the best we know.
            failcnt = self._read("memory", "memory.failcnt")
            return bool(failcnt and failcnt.strip() not in ("", "0"))
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
        return False

    def _events(self) -> str:
        if self._events_fd is None:
            directory = self.dirs.get("memory") or self.dirs.get("unified")
            name = "memory.events" if self.version == 2 else "memory.oom_control"
            try:
                self._events_fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC) if directory else -1
            except OSError:
                return ""
        if self._events_fd < 0:
            return ""
        try:
            return os.pread(self._events_fd, 4096, 0).decode()
        except OSError:
            return ""

    def child(self, name: str) -> Group:
        dirs = {c: d / name for c, d in self.dirs.items()}
        for directory in dirs.values():
            directory.mkdir(exist_ok=True)
        return Group(self.version, dirs)

    def remove(self) -> None:
        if self._events_fd is not None and self._events_fd >= 0:
            os.close(self._events_fd)
        self._events_fd = -1
        for directory in self.dirs.values():
            for child in sorted(directory.glob("*/"), reverse=True):
                if (child / "cgroup.procs").exists():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()


def bento_group(name: str) -> Group | None:
    """Make Bento's own group (``name``) under ours; None where cgroups are not ours to use."""
    try:
        own = _own_paths()
    except OSError:
        return None
    unified = ROOT / "cgroup.controllers"
    if unified.exists():  # pure v2
        base = ROOT / own.get("", "/").lstrip("/")
        if base.name == LEAF:  # moved there by an earlier call: its groups go beside it
            base = base.parent
        if base != ROOT and not _leave_for_a_leaf(base):
            return None
        group = Group(2, {"unified": base / name})
    else:
        dirs = {}
        for controller in ("memory", "pids", "cpu", "cpuacct"):
            mount = ROOT / controller
            if (mount / "cgroup.procs").exists():
                dirs[controller] = mount / own.get(controller, "/").lstrip("/") / name
        if "memory" not in dirs or "pids" not in dirs:
            return None
        group = Group(1, dirs)
    _remove_stale(group)
    try:
        for directory in group.dirs.values():
            directory.mkdir(exist_ok=True)
            if not os.access(directory / "cgroup.procs", os.W_OK):
                raise PermissionError(directory)
        if group.version == 2:  # children need the controllers enabled below us
            (group.dirs["unified"] / "cgroup.subtree_control").write_text(_enable(CONTROLLERS))
    except OSError:
        for directory in group.dirs.values():
            with contextlib.suppress(OSError):
                directory.rmdir()
        return None
    return group


def _leave_for_a_leaf(base: Path) -> bool:
    """Make ``base``, the v2 group we were started in, able to hand controllers down.

    cgroup v2 lets a group other than the root hand controllers to its children only while
    it holds no process itself. A box started by systemd with ``Delegate=yes`` runs in
    the service's group, which systemd delegates to it with no controller enabled below:
    the server first moves itself into a leaf of its own (``LEAF``, as systemd's
    ``DelegateSubgroup=`` would), then enables them. Only when it is alone there: others'
    processes are not ours to move. False where the group cannot be made to serve.
    """
    try:
        enabled = (base / "cgroup.subtree_control").read_text().split()
        if all(controller in enabled for controller in CONTROLLERS):
            return True
        here = (base / "cgroup.procs").read_text().split()
        if here:
            if here != [str(os.getpid())]:
                return False
            leaf = base / LEAF
            leaf.mkdir(exist_ok=True)
            (leaf / "cgroup.procs").write_text(str(os.getpid()))
        (base / "cgroup.subtree_control").write_text(_enable(CONTROLLERS))
    except OSError:
        return False
    return True


def _enable(controllers: tuple[str, ...]) -> str:
    return " ".join(f"+{controller}" for controller in controllers)


def _remove_stale(group: Group) -> None:
    """Remove the groups of Bento servers that died without removing theirs (``bento-PID-N``)."""
    for controller, directory in group.dirs.items():
        for stale in directory.parent.glob("bento-*"):
            pid = stale.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                Group(group.version, {controller: stale}).remove()  # only what is empty goes


def admit_sandbox(group: Group, pid: int, info_fd: int) -> None:
    """Move a sandbox into ``group`` while bubblewrap holds it, before it runs anything.

    Bubblewrap (``pid``) forks the sandbox's first process early, names it on ``info_fd``
    and holds it on its block descriptor before it forks or runs anything else; whatever
    forks it makes after that inherits the group. Moving bubblewrap first lets the kernel's
    grace period pass while it builds the sandbox; the second move then costs little. The
    sandbox stays held: letting it go (a byte on the block descriptor) is the caller's, once
    it may start (bento.sandbox.host lets a few start at once). Closes ``info_fd``; a sandbox
    that died meanwhile raises OSError.

    On any failure both processes are killed before this returns, so that the caller's
    closing the hold (an end of file, on which bubblewrap goes on) lets nothing go.
    """
    child = 0
    try:
        group.admit(pid)
        info = b""  # bubblewrap writes one small JSON object and closes its end
        deadline = time.monotonic() + ADMIT_PATIENCE
        while chunk := _read_before(info_fd, deadline):
            info += chunk
        try:
            child = int(json.loads(info)["child-pid"])
        except (ValueError, KeyError, TypeError):
            raise OSError(f"bubblewrap did not name its sandbox's process (it said {info[:200]!r})") from None
        group.admit(child)
    except BaseException:
        for process in (child, pid):
            if process > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process, signal.SIGKILL)
        raise
    finally:
        os.close(info_fd)


def _read_before(fd: int, deadline: float) -> bytes:
    """The next bytes from ``fd``, b"" at its end; OSError if none come before ``deadline``."""
    # poll, not select: a box of hundreds of instances holds descriptors past select's 1024
    # (ValueError: every session of a 500-session burst failed, and the pool's took the box down).
    waiting = select.poll()
    waiting.register(fd, select.POLLIN)
    if not waiting.poll(max(0.0, deadline - time.monotonic()) * 1000):
        raise OSError(f"bubblewrap did not name its sandbox's process within {ADMIT_PATIENCE:g} s")
    return os.read(fd, 4096)
