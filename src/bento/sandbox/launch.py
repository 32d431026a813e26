"""Starting an instance inside its sandbox, and waiting for it with its resource usage.

The command line is a chain of small, well-known tools, each doing one thing:

    sh -c 'join the instance cgroups; exec "$@"'     (only where cgroups are ours)
    prlimit --as --cpu --nproc --nofile --fsize --core=0
    setpriv --reuid=UID --regid=GID --clear-groups    (only when the server runs as root)
    bwrap --unshare-all --disable-userns --die-with-parent --seccomp FD ...
    /usr/bin/python3 -I -S -c '<runtime bootstrap>' CHANNEL_FD

The instance inherits exactly one extra file descriptor, its end of the channel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bento.protocol.frames import HEADER, Frame, FrameError, decode_header
from bento.protocol.policy import Needs, NodePolicy, SyscallProfile
from bento.sandbox import cgroups, seccomp

SANDBOX_GID = 199_999  # group of every instance: may read function code, nothing else of ours
UID_BASE = 200_000  # instances run as uids from here up, one uid each (so per-uid limits are per instance)
UID_BLOCK = 4096  # uids claimed by one server; blocks are claimed so that two servers never share a uid
INNER_ID = 65534  # the uid and gid an instance sees for itself
PYTHON = "/usr/bin/python3"
BOOTSTRAP = "import sys; sys.path[:0] = ['/opt/bento']; from bento.runtime.__main__ import main; main()"
_MB = 1 << 20
# Address space is a coarse backstop (cgroups give the real memory cap): Python maps far
# more than it touches, so the rlimit is a multiple of the memory limit.
_ADDRESS_SPACE_FACTOR = 4
_ADDRESS_SPACE_FLOOR = 1024 * _MB


class SandboxUnavailable(Exception):
    """This host cannot confine instances (no bubblewrap, no user namespaces, ...)."""


@dataclass
class Usage:
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0


@dataclass
class Exited:
    returncode: int
    usage: Usage = field(default_factory=Usage)
    oom_killed: bool = False


class SandboxHost:
    """What a server knows about confining instances on this host."""

    def __init__(self, policy: NodePolicy, state_dir: Path) -> None:
        """``state_dir`` stays private; what instances may read lives in :attr:`root`."""
        for tool in ("bwrap", "prlimit"):
            if shutil.which(tool) is None:
                raise SandboxUnavailable(
                    f"`{tool}` is not installed (Debian: apt-get install bubblewrap util-linux)"
                )
        if not Path(PYTHON).exists():
            raise SandboxUnavailable(f"{PYTHON} is not installed (Debian: apt-get install python3)")
        self.policy = policy
        self.privileged = os.geteuid() == 0
        self.root = _work_dir(state_dir)
        self.runtime_dir = self.root / "runtime"
        self.group = cgroups.bento_group(f"bento-{os.getpid()}")
        if self.group is not None:
            # Bento as a whole: the operator's totals, so instances can never starve the relay.
            self.group.limit(
                memory_bytes=policy.total_memory_mb * _MB,
                pids=policy.instances_total * policy.instance.processes,
                cpus=policy.total_cpu_share,
            )
        self._uid_base = 0
        self._uid_claim: Path | None = None
        if self.privileged:
            self._uid_base, self._uid_claim = _claim_uid_block()
        self._free_slots = list(range(min(policy.instances_total, UID_BLOCK)))
        self._pool: list[Instance] = []
        self._tracked: set[int] = set()  # pids of our instances: waited for by Instance itself
        _become_subreaper()
        self._pool_changed = asyncio.Event()
        self.policy_filter = seccomp.compile_filter(policy.syscall_profiles, allow_exec=True)
        self.python_version = subprocess.run(
            [PYTHON, "-I", "-S", "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        self._install_runtime()
        self.share(self.root)

    def enforced(self) -> dict[str, str]:
        """Which limits this host enforces, and how: published in the descriptor."""
        cg = f"cgroup v{self.group.version}" if self.group else ""
        return {
            "namespaces": "bubblewrap: user, pid, ipc, uts, mount, cgroup, net",
            "syscalls": "seccomp allow-list (libseccomp)",
            "memory": cg or "rlimit address space only (no writable cgroups on this host)",
            "processes": cg or ("rlimit per instance uid" if self.privileged else "not enforced"),
            "cpu_time": "rlimit",
            "cpu_share": cg
            if self.group and ("cpu" in self.group.dirs or self.group.version == 2)
            else "not enforced",
            "uid": "a distinct unprivileged uid per instance" if self.privileged else "the server's uid",
            "total": cg or "admission control only",
        }

    def _install_runtime(self) -> None:
        """Copy the runtime (standard library only) where sandboxes can read it."""
        import bento

        package = Path(bento.__file__).parent
        target = self.runtime_dir / "bento"
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        (target / "protocol").mkdir(parents=True)
        (target / "runtime").mkdir()
        (target / "__init__.py").write_text("")
        (target / "protocol" / "__init__.py").write_text("")
        shutil.copy(package / "protocol" / "frames.py", target / "protocol")
        for source in (package / "runtime").glob("*.py"):
            shutil.copy(source, target / "runtime")
        self.share(self.runtime_dir)

    def share(self, root: Path) -> None:
        """Make ``root`` readable by instances (and, when we are root, by nobody else)."""
        for path in [root, *root.rglob("*")]:
            if self.privileged:
                os.chown(path, 0, SANDBOX_GID)
                path.chmod(0o750 if path.is_dir() else 0o640)
            else:
                path.chmod(0o755 if path.is_dir() else 0o644)

    def manifest_filter(self, needs: Needs) -> bytes:
        allowed = frozenset(p for p in needs.syscall_profiles if p in self.policy.syscall_profiles)
        return _filter_for(allowed)

    # --- instances: cold, or from the pool ---------------------------------------------

    async def acquire(self, code_dir: Path, needs: Needs) -> Instance:
        """An instance for ``code_dir`` under ``needs``: a pooled one if any waits, else a new one.

        A pooled sandbox was started with the policy's maxima and an empty /function; it
        gets the code copied in, its cgroup lowered to the manifest's needs here, and it
        lowers its own rlimits and seccomp filter from the START frame before the
        function's code is loaded.
        """
        while self._pool:
            instance = self._pool.pop()
            self._pool_changed.set()
            if instance.process.returncode is not None or instance.slot_dir is None:
                continue  # died while waiting
            try:  # copying code may take a while: off the event loop
                await asyncio.to_thread(self._fill, code_dir, instance.slot_dir)
            except BaseException:
                instance.kill()  # taken from the pool, never handed out: nobody else would
                raise
            if instance.group is not None:
                instance.group.limit(memory_bytes=needs.memory_mb * _MB, pids=needs.processes)
            instance.rlimits = _rlimits(needs, self.privileged)
            return instance
        return await self.spawn(code_dir, needs)

    def _fill(self, code_dir: Path, slot_dir: Path) -> None:
        shutil.copytree(code_dir, slot_dir, dirs_exist_ok=True)
        self.share(slot_dir)

    async def reap_orphans_forever(self, interval: float = 1.0) -> None:
        """Reap what killed sandboxes leave behind. Owned by the server; cancel to stop.

        Killing a sandbox kills bubblewrap; its inner process dies with it (die-with-parent)
        but is orphaned first. As a child subreaper we inherit such orphans and must reap
        them, or they linger as zombies counted against their uid's process limit.
        """
        while True:
            await asyncio.sleep(interval)
            _reap_orphans(self._tracked)  # procfs reads and WNOHANG waits: never block

    async def keep_pool(self, size: int) -> None:
        """Keep ``size`` sandboxes started and waiting. Owned by the server; cancel to stop."""
        maxima = Needs(**{k: getattr(self.policy.instance, k) for k in _LIMITS}, instances=1)
        try:
            while True:
                while len(self._pool) < size and len(self._free_slots) > size:
                    slot_dir = self.root / "pool" / os.urandom(8).hex()
                    slot_dir.mkdir(parents=True)
                    self.share(slot_dir.parent)
                    instance = await self.spawn(slot_dir, maxima)
                    instance.slot_dir = slot_dir
                    if await _ready(instance):
                        self._pool.append(instance)
                    else:
                        instance.kill()
                self._pool_changed.clear()
                await self._pool_changed.wait()
        finally:
            for instance in self._pool:
                instance.kill()
            self._pool.clear()

    async def spawn(self, code_dir: Path, needs: Needs) -> Instance:
        """A new sandbox with ``code_dir`` at /function and ``needs`` as its limits."""
        if not self._free_slots:
            raise SandboxUnavailable("every instance slot is in use")
        slot = self._free_slots.pop(0)
        ours, theirs = socket.socketpair()
        # The broker keeps message boundaries: one request, one message (bento.server.broker).
        broker_ours, broker_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel_fd, broker_fd = theirs.fileno(), broker_theirs.fileno()
        group = None
        try:
            if self.group is not None:
                group = self.group.child(f"i{slot}")
                group.limit(memory_bytes=needs.memory_mb * _MB, pids=needs.processes)
            filter_fd = seccomp.memfd(self.policy_filter)
            try:
                argv = self._argv(code_dir, needs, slot, group, (channel_fd, broker_fd), filter_fd)
                # Popen only forks and execs (it returns once exec succeeded); the wait is ours.
                process = subprocess.Popen(  # noqa: ASYNC220
                    argv,
                    pass_fds=(channel_fd, broker_fd, filter_fd),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            finally:
                os.close(filter_fd)
                theirs.close()
                broker_theirs.close()
        except BaseException:
            ours.close()
            broker_ours.close()
            self._release(slot, group)
            raise
        self._tracked.add(process.pid)
        return Instance(process, group, lambda: self._release(slot, group, process.pid), ours, broker_ours)

    def _release(self, slot: int, group: cgroups.Group | None, pid: int | None = None) -> None:
        if group is not None:
            group.remove()
        self._free_slots.append(slot)  # to the back: the slot used longest ago is reused first
        self._tracked.discard(pid or 0)

    def _argv(
        self,
        code_dir: Path,
        needs: Needs,
        slot: int,
        group: cgroups.Group | None,
        fds: tuple[int, int],
        filter_fd: int,
    ) -> list[str]:
        argv: list[str] = []
        if group is not None:
            join = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
            argv += ["/bin/sh", "-c", join, "sh", *group.procs_files(), "--"]
        limits = _rlimits(needs, self.privileged)
        argv += [
            "prlimit",
            f"--as={limits['RLIMIT_AS']}",
            f"--cpu={limits['RLIMIT_CPU']}:{limits['RLIMIT_CPU'] + 1}",  # SIGXCPU, then SIGKILL
            f"--nofile={limits['RLIMIT_NOFILE']}",
            f"--fsize={limits['RLIMIT_FSIZE']}",
            "--core=0",
        ]
        if "RLIMIT_NPROC" in limits:
            argv.append(f"--nproc={limits['RLIMIT_NPROC']}")
        argv.append("--")
        if self.privileged:
            argv += [
                "setpriv",
                f"--reuid={self._uid_base + slot}",
                f"--regid={SANDBOX_GID}",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ]
        argv += [
            "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--uid",
            str(INNER_ID),
            "--gid",
            str(INNER_ID),
            "--hostname",
            "bento",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for name in ("bin", "lib", "lib64", "sbin"):
            path = Path("/") / name
            if path.is_symlink():
                argv += ["--symlink", os.readlink(path), f"/{name}"]
            elif path.is_dir():
                argv += ["--ro-bind", str(path), f"/{name}"]
        if Path("/etc/ssl/certs").is_dir():
            argv += ["--ro-bind", "/etc/ssl/certs", "/etc/ssl/certs"]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(needs.scratch_mb * _MB),
            "--perms",
            "1777",
            "--tmpfs",
            "/tmp",  # noqa: S108
            "--ro-bind",
            str(code_dir),
            "/function",
            "--ro-bind",
            str(self.runtime_dir),
            "/opt/bento",
            "--remount-ro",
            "/",
            "--chdir",
            "/function",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--setenv",
            "HOME",
            "/tmp",  # noqa: S108 (inside the sandbox: its own RAM-only scratch)
            "--setenv",
            "PYTHONDONTWRITEBYTECODE",
            "1",
            "--seccomp",
            str(filter_fd),
            PYTHON,
            "-I",
            "-S",
            "-c",
            BOOTSTRAP,
            str(fds[0]),
            str(fds[1]),
        ]
        return argv

    def close(self) -> None:
        # Killed sandboxes leave orphans that die a moment later: reap them before we go,
        # or they outlive us as zombies of whatever reaps (or does not) after us.
        deadline = time.monotonic() + 2.0
        while _reap_orphans(self._tracked) and time.monotonic() < deadline:
            time.sleep(0.02)
        _reap_orphans(self._tracked)
        if self.group is not None:
            self.group.remove()
        shutil.rmtree(self.root, ignore_errors=True)
        if self._uid_claim is not None:
            self._uid_claim.unlink(missing_ok=True)


class Instance:
    """A sandboxed process: its stderr, its exit, and what it used."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        group: cgroups.Group | None,
        release: Callable[[], None],
        channel: socket.socket,
        broker: socket.socket,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.group = group
        self.channel = channel  # our ends of its two sockets
        self.broker = broker
        self.slot_dir: Path | None = None  # a pooled sandbox's /function, filled when taken
        self.rlimits: dict[str, int] = {}  # what a pooled sandbox must lower itself to
        self._release = release
        self._exited: asyncio.Future[Exited] = asyncio.get_running_loop().create_future()
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
        self.process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never reaps it again
        usage = Usage()
        if rusage is not None:
            usage.cpu_seconds = rusage.ru_utime + rusage.ru_stime
            usage.peak_memory_bytes = rusage.ru_maxrss * 1024
        oom = False
        if self.group is not None:
            usage.peak_memory_bytes = self.group.peak_memory() or usage.peak_memory_bytes
            usage.cpu_seconds = self.group.cpu_seconds() or usage.cpu_seconds
            oom = self.group.oom_killed()
        self._release()
        if self.slot_dir is not None:
            shutil.rmtree(self.slot_dir, ignore_errors=True)
        if not self._exited.done():
            self._exited.set_result(Exited(self.process.returncode, usage, oom))

    async def wait(self) -> Exited:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """Kill the whole sandbox (bubblewrap takes everything inside with it)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)


async def _ready(instance: Instance, patience: float = 30.0) -> bool:
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


_LIMITS = ("memory_mb", "cpu_seconds", "wall_seconds", "processes", "open_files", "scratch_mb", "output_mb")


def _rlimits(needs: Needs, privileged: bool) -> dict[str, int]:
    """The rlimits for ``needs`` (what prlimit sets for a cold start), by resource name."""
    limits = {
        "RLIMIT_AS": max(_ADDRESS_SPACE_FLOOR, needs.memory_mb * _MB * _ADDRESS_SPACE_FACTOR),
        "RLIMIT_CPU": needs.cpu_seconds,
        "RLIMIT_NOFILE": needs.open_files,
        "RLIMIT_FSIZE": needs.scratch_mb * _MB,
        "RLIMIT_CORE": 0,
    }
    if privileged:
        limits["RLIMIT_NPROC"] = needs.processes
    return limits


def _reap_orphans(tracked: set[int]) -> int:
    """Reap our zombie children that no Instance waits for; return how many orphaned
    sandbox processes (bubblewrap) are still dying."""
    me = os.getpid()
    dying = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in tracked:
            continue
        try:
            name, rest = (entry / "stat").read_text().rsplit(")", 1)
            fields = rest.split()
        except (OSError, ValueError):
            continue
        if int(fields[1]) != me:
            continue
        if fields[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
        elif name.endswith("(bwrap"):
            dying += 1
    return dying


def _become_subreaper() -> None:
    """Inherit the orphans of our sandboxes, so that we can reap them (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


@functools.lru_cache(maxsize=16)
def _filter_for(profiles: frozenset[SyscallProfile]) -> bytes:
    """Compiled once per set of profiles: libseccomp takes milliseconds per filter."""
    return seccomp.compile_filter(profiles, allow_exec=SyscallProfile.PROCESSES in profiles)


def _claim_uid_block() -> tuple[int, Path]:
    """A block of uids no other Bento server on this host uses (a lock file per block)."""
    for block in range(1000):
        claim = Path(tempfile.gettempdir()) / f"bento-uids-{block}"
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with contextlib.suppress(OSError, ValueError):
                owner = int(claim.read_text())
                if not Path(f"/proc/{owner}").exists():  # its server died: take it over
                    claim.write_text(str(os.getpid()))
                    return UID_BASE + block * UID_BLOCK, claim
            continue
        with os.fdopen(fd, "w") as out:
            out.write(str(os.getpid()))
        return UID_BASE + block * UID_BLOCK, claim
    raise SandboxUnavailable("no free block of sandbox uids (1000 Bento servers on one host?)")


def work_dir_of(state_dir: Path) -> Path:
    """Where instances' code and the runtime live: outside the private state directory.

    Under the temporary directory (RAM on most hosts), named after the state directory
    so that a restarted server finds and clears what its predecessor left.
    """
    name = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bento-{name}"


def _work_dir(state_dir: Path) -> Path:
    root = work_dir_of(state_dir)
    if root.exists():
        if root.is_symlink() or root.stat().st_uid != os.geteuid():
            raise SandboxUnavailable(f"{root} exists and is not ours; remove it")
        shutil.rmtree(root)
    root.mkdir(mode=0o700)
    return root


def encode_filter(program: bytes) -> str:
    return base64.b64encode(program).decode()
