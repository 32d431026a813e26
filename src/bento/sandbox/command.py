"""The command line that starts one sandbox, rendered from its spec.

A chain of small, well-known tools, each doing one thing:

    prlimit --as --data --cpu --nofile --fsize --core=0
    setpriv --reuid=UID --regid=GID --clear-groups    (only when the server runs as root)
    bwrap --unshare-all --disable-userns --die-with-parent --seccomp FD ...
          --info-fd FD --block-fd FD                  (only where cgroups are ours)
    /usr/bin/python3 -I -S -c '<runtime bootstrap>' CHANNEL_FD BROKER_FD

Where the instance has cgroups, the server moves bubblewrap and the sandbox's first
process into them while bubblewrap builds the sandbox: bubblewrap names that process on
the info descriptor and holds it on the block descriptor, before it forks or runs
anything, until the server is done (bento.sandbox.host). A process that moved itself
first (``sh -c 'echo $$ > cgroup.procs; exec ...'``) kept the whole start waiting for the
kernel's grace period.

RLIMIT_NPROC is not set out here: the runtime sets it inside the instance's own user
namespace, where it counts only the instance's processes (see bento.sandbox.spec).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bento.sandbox.spec import UNLIMITED, Mount, Spec

SANDBOX_GID = 199_999  # group of every instance: may read function code, nothing else of ours
INNER_ID = 65534  # the uid and gid an instance sees for itself
PYTHON = "/usr/bin/python3"
RUNTIME_MOUNT = "/opt/bento"  # where an instance finds the runtime (bento.runtime, standard library only)
# After the standard library: nothing under /opt/bento can stand in for a module of Python's own.
BOOTSTRAP = f"import sys; sys.path.append({RUNTIME_MOUNT!r}); from bento.runtime.__main__ import main; main()"

_PRLIMIT = {
    "RLIMIT_AS": "--as",
    "RLIMIT_DATA": "--data",
    "RLIMIT_NOFILE": "--nofile",
    "RLIMIT_FSIZE": "--fsize",
    "RLIMIT_CORE": "--core",
}


@dataclass(frozen=True)
class Placement:
    """Where one sandbox goes on this host: its files, its uid, its cgroup, its descriptors."""

    code_dir: Path
    runtime_dir: Path
    uid: int | None  # a uid of its own (the server runs as root), else None
    hold_fd: int | None  # the sandbox waits to read a byte here (only where it has cgroups)
    info_fd: int | None  # bubblewrap writes its sandbox's pid here (with hold_fd)
    channel_fd: int
    broker_fd: int
    filter_fd: int

    def descriptors(self) -> tuple[int, ...]:
        """Every descriptor the sandbox's command line names: the ones it must inherit."""
        held = (self.hold_fd, self.info_fd) if self.hold_fd is not None and self.info_fd is not None else ()
        return (self.channel_fd, self.broker_fd, self.filter_fd, *held)


def argv(spec: Spec, where: Placement) -> list[str]:
    limits = spec.outer_rlimits()
    line = ["prlimit", *(f"{flag}={_limit(limits[name])}" for name, flag in _PRLIMIT.items())]
    line += [f"--cpu={limits['RLIMIT_CPU']}:{limits['RLIMIT_CPU'] + 1}", "--"]  # SIGXCPU, then SIGKILL
    if where.uid is not None:
        line += ["setpriv", f"--reuid={where.uid}", f"--regid={SANDBOX_GID}", "--clear-groups"]
        line += ["--inh-caps=-all", "--"]
    line += ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    line += ["--new-session", "--uid", str(INNER_ID), "--gid", str(INNER_ID), "--hostname", "bento"]
    line += _root()
    line += ["--proc", "/proc", "--dev", "/dev"]
    line += _mount(Mount("tmpfs", "/tmp", size_bytes=spec.shape.scratch_bytes))  # noqa: S108
    line += [
        "--ro-bind",
        str(where.code_dir),
        "/function",
        "--ro-bind",
        str(where.runtime_dir),
        RUNTIME_MOUNT,
    ]
    for mount in spec.shape.mounts:
        line += _mount(mount)
    line += ["--remount-ro", "/", "--chdir", "/function", "--clearenv"]
    # HOME is its own RAM-only scratch, inside the sandbox.
    environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}  # noqa: S108
    for name, value in environment.items():
        line += ["--setenv", name, value]
    line += ["--seccomp", str(where.filter_fd)]
    if where.hold_fd is not None and where.info_fd is not None:
        line += ["--info-fd", str(where.info_fd), "--block-fd", str(where.hold_fd)]
    line += [PYTHON, "-I", "-S", "-c", BOOTSTRAP, str(where.channel_fd), str(where.broker_fd)]
    return line


def _root() -> list[str]:
    """A read-only root of /usr, the /bin and /lib links (or directories), and the CA certificates."""
    line = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            line += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            line += ["--ro-bind", str(path), f"/{name}"]
    if Path("/etc/ssl/certs").is_dir():
        line += ["--ro-bind", "/etc/ssl/certs", "/etc/ssl/certs"]
    return line


def _mount(mount: Mount) -> list[str]:
    if mount.kind == "tmpfs":
        return ["--size", str(mount.size_bytes), "--perms", "1777", "--tmpfs", mount.dest]
    return [f"--{mount.kind}", mount.source, mount.dest]


def _limit(value: int) -> str:
    return "unlimited" if value == UNLIMITED else str(value)


def byte_compile(runtime_dir: Path) -> None:
    """Byte-compile what has no .pyc yet under ``runtime_dir``, with the sandbox's own Python.

    The sandbox is read-only and writes no bytecode, so a module without a .pyc is compiled
    at every import: 20 ms of every cold start for the runtime itself (measured with
    bench/sandbox_startup.py), seconds for the client's dependencies, counted against a
    function's CPU limit. Existing .pyc files (copied along with offered packages) are
    valid there as long as their sources keep their modification times; compileall skips
    them. Tracebacks name the files where the sandbox sees them.
    """
    argv = [PYTHON, "-I", "-S", "-m", "compileall", "-q", "-j", "0", "-d", RUNTIME_MOUNT, "."]
    # A file that fails to compile stays source: it fails again, clearly, when imported.
    subprocess.run(argv, cwd=runtime_dir, capture_output=True, timeout=600, check=False)
