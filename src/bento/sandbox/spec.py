"""The sandbox as data: one frozen spec per instance, computed once from the manifest's needs.

Everything that confines an instance reads this spec and nothing else: the bubblewrap
command line (bento.sandbox.command), the rlimits (set outside by prlimit for a cold
start, and inside by the runtime from the START frame), the cgroup limits, the seccomp
filter, the memory watchdog, and the descriptor's account of how each limit is enforced
(:func:`enforcement`). A new need (a bind mount for storage, a socket for tor) is a field
here, a line in :meth:`Spec.of`, and a row in :data:`MECHANISMS`; a unit test checks
that every field has its row, so nothing is confined without the descriptor saying how.

>>> from bento.protocol.policy import Needs
>>> spec = Spec.of(Needs(memory_mb=64, processes=4, scratch_mb=8))
>>> spec.rlimits()["RLIMIT_FSIZE"] >> 20, spec.shape.scratch_bytes >> 20
(8, 8)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from bento.protocol.policy import InstanceLimits, Needs, SyscallProfile

MB = 1 << 20
# Threads' stacks are private writable memory, so RLIMIT_DATA counts them: the runtime
# gives new threads this much stack, and each process or thread the spec allows gets it
# on top of the memory limit.
THREAD_STACK = 1 * MB
# Address space is a coarse backstop only (malloc reserves far more than it touches).
_ADDRESS_SPACE_FACTOR = 4
_ADDRESS_SPACE_FLOOR = 1024 * MB
UNLIMITED = -1  # resource.RLIM_INFINITY on Linux
FONTS = "/etc/fonts"  # fontconfig's configuration, for chromium
# Debian's chromium itself (/usr/bin/chromium is a shell script that reads /etc/chromium.d,
# which the sandbox does not hold); under /usr, so every sandbox sees it read-only.
CHROMIUM_BINARY = "/usr/lib/chromium/chromium"
# The namespaces bubblewrap makes for every instance (bento.sandbox.command unshares all).
NAMESPACES = "user, pid, ipc, uts, mount, cgroup, net"


@dataclass(frozen=True)
class Mount:
    """One more path in the sandbox, besides the fixed root, the code and the runtime."""

    kind: Literal["ro-bind", "bind", "tmpfs"]
    dest: str
    source: str = ""  # the host path, for binds
    size_bytes: int = 0  # for tmpfs


@dataclass(frozen=True)
class Shape:
    """What is fixed once a sandbox has started: its file systems.

    A pooled sandbox can take any function whose spec has the same shape; its limits
    (rlimits, cgroup, seccomp) are lowered to the function's when it is taken.
    """

    scratch_bytes: int  # the size of the RAM-only /tmp
    mounts: tuple[Mount, ...] = ()
    # Chromium's shape: its font configuration mounted, and no address-space or data
    # rlimit. Its allocators reserve far more address space than they touch (it fails to
    # start under any RLIMIT_AS, 1 GiB to 1 TiB, and any RLIMIT_DATA tried), so its memory
    # is held by the cgroup where there is one, else by the server's watchdog, which kills
    # an instance whose processes together hold more than the limit.
    chromium: bool = False


@dataclass(frozen=True)
class Spec:
    """How one instance is confined."""

    shape: Shape
    memory_bytes: int
    cpu_seconds: int
    processes: int  # processes and threads at once
    open_files: int
    syscalls: frozenset[SyscallProfile]

    @classmethod
    def of(cls, needs: Needs) -> Spec:
        """The spec enforcing ``needs`` (admission has checked them against the node policy)."""
        chromium = SyscallProfile.CHROMIUM in needs.syscall_profiles
        fonts = (Mount("ro-bind", FONTS, FONTS),) if chromium and Path(FONTS).is_dir() else ()
        return cls(
            shape=Shape(scratch_bytes=needs.scratch_mb * MB, mounts=fonts, chromium=chromium),
            memory_bytes=needs.memory_mb * MB,
            cpu_seconds=needs.cpu_seconds,
            processes=needs.processes,
            open_files=needs.open_files,
            syscalls=frozenset({SyscallProfile.COMPUTE, *needs.syscall_profiles}),
        )

    @classmethod
    def maxima(cls, limits: InstanceLimits, profiles: frozenset[SyscallProfile], shape: Shape) -> Spec:
        """The most a pooled sandbox of ``shape`` may use before it is given a function."""
        return cls(
            shape=shape,
            memory_bytes=limits.memory_mb * MB,
            cpu_seconds=limits.cpu_seconds,
            processes=limits.processes,
            open_files=limits.open_files,
            syscalls=profiles | {SyscallProfile.COMPUTE},
        )

    def rlimits(self) -> dict[str, int]:
        """Every rlimit, by resource name; the runtime sets each one to this (soft and hard)."""
        bounded = not self.shape.chromium
        return {
            "RLIMIT_AS": (
                max(_ADDRESS_SPACE_FLOOR, self.memory_bytes * _ADDRESS_SPACE_FACTOR) if bounded else UNLIMITED
            ),
            "RLIMIT_DATA": self.memory_bytes + self.processes * THREAD_STACK if bounded else UNLIMITED,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_FSIZE": self.shape.scratch_bytes,
            "RLIMIT_CORE": 0,
            # Counted per user namespace (Linux >= 5.14): set inside the sandbox, where the
            # instance's namespace holds only its own processes (and bubblewrap's init),
            # whatever uid runs it.
            "RLIMIT_NPROC": self.processes + 1,
        }

    def outer_rlimits(self) -> dict[str, int]:
        """The rlimits prlimit may set before bubblewrap: not RLIMIT_NPROC, which out there
        would count every process of the server's uid."""
        return {k: v for k, v in self.rlimits().items() if k != "RLIMIT_NPROC"}

    def cgroup_pids(self) -> int:
        """The cgroup's pids.max: the function's processes, and bubblewrap's two."""
        return self.processes + 2

    def start_frame(self, seccomp_program: str) -> dict[str, object]:
        """What the runtime applies to itself before it loads the function (see runtime.confine)."""
        return {"rlimits": self.rlimits(), "thread_stack": THREAD_STACK, "seccomp": seccomp_program}


@dataclass(frozen=True)
class Host:
    """What this host offers, as far as enforcement goes."""

    privileged: bool  # the server runs as root: a uid of its own per instance
    cgroup: str  # "cgroup v1" / "cgroup v2", or "" where no cgroup is ours
    cgroup_cpu: bool  # the cgroup can take a CPU quota
    userns_nproc: bool  # the kernel counts RLIMIT_NPROC per user namespace


_NOT = "not enforced"


def _memory(h: Host) -> str:
    if h.cgroup:
        return f"{h.cgroup} memory limit; RLIMIT_DATA per process"
    return "RLIMIT_DATA per process; the server kills the instance when its resident memory is over the limit"


def _processes(h: Host) -> str:
    if not h.userns_nproc and not h.privileged:
        return f"{h.cgroup} pids limit" if h.cgroup else _NOT
    counted = "per user namespace" if h.userns_nproc else "per instance uid"
    return f"RLIMIT_NPROC {counted}" + (f"; {h.cgroup} pids limit" if h.cgroup else "")


# Published name -> (the spec field it enforces, or "" for one the server or host keeps;
# how it is enforced on a host). Every Spec field must have a row (tests/unit/test_sandbox_spec.py).
MECHANISMS: dict[str, tuple[str, Callable[[Host], str]]] = {
    "namespaces": ("", lambda h: f"bubblewrap: {NAMESPACES}"),
    "filesystem": ("shape", lambda h: "bubblewrap: read-only /usr, code and runtime; RAM-only /tmp"),
    "scratch": ("shape", lambda h: "size of the /tmp tmpfs; RLIMIT_FSIZE"),
    "chromium": (
        "shape",
        lambda h: (
            "the chromium profile only: /etc/fonts read-only, no RLIMIT_AS or RLIMIT_DATA; memory "
            + (
                f"held by the {h.cgroup} memory limit"
                if h.cgroup
                else "held by the server's watchdog over all its processes, every 0.1 s"
            )
        ),
    ),
    "syscalls": (
        "syscalls",
        lambda h: (
            "seccomp allow-list (libseccomp): the manifest's profiles; in every one no connect, no "
            "MSG_FASTOPEN and only socket options that never change where a socket talks, so a socket "
            "the broker grants stays where it was checked (bind and listen: only with chromium's profile), "
            "and no socket-configuration ioctl (SIOCGIFCONF...), so it cannot read the box's interfaces"
        ),
    ),
    "memory": ("memory_bytes", _memory),
    "processes": ("processes", _processes),
    "cpu_time": ("cpu_seconds", lambda h: "RLIMIT_CPU"),
    "open_files": ("open_files", lambda h: "RLIMIT_NOFILE"),
    "wall_time": ("", lambda h: "the server"),
    "output": ("", lambda h: "the server"),
    "cpu_share": ("", lambda h: f"{h.cgroup} CPU quota" if h.cgroup_cpu else _NOT),
    "uid": (
        "",
        lambda h: (
            "a distinct unprivileged uid per instance"
            if h.privileged
            else "the server's uid, seen as 65534 in the instance's own user namespace"
        ),
    ),
    "total": (
        "",
        lambda h: "admission control" + (f"; {h.cgroup} limits on all of Bento" if h.cgroup else ""),
    ),
}


def enforcement(host: Host) -> dict[str, str]:
    """How each limit is enforced on ``host`` (the descriptor's ``runtime.isolation``)."""
    return {name: how(host) for name, (_, how) in MECHANISMS.items()}


def unenforced(host: Host) -> list[str]:
    """The limits ``host`` cannot enforce: the server refuses to start unless the operator accepts them."""
    return [name for name, how in enforcement(host).items() if how == _NOT]


def spec_fields() -> set[str]:
    return {f.name for f in fields(Spec)}
