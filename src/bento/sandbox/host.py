"""What a server knows about confining instances on this host, and how it starts them.

The same limits hold whether the server runs as root or as a dedicated user: rlimits
(RLIMIT_NPROC counted in each instance's own user namespace), the tmpfs size, seccomp
and, where the host gives us cgroups (root, or a delegated v2 cgroup), cgroup limits;
without cgroups, a watchdog kills an instance whose resident memory is over its limit.
What this host cannot enforce at all (a CPU quota without cgroups) makes the server
refuse to start, unless the operator accepts it by name (``accept_unenforced``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path

from bento.protocol.policy import Needs, NodePolicy, SyscallProfile
from bento.sandbox import cgroups, command, seccomp, uids, watch
from bento.sandbox.instance import Instance, ready
from bento.sandbox.pool import Pool
from bento.sandbox.slots import NoSlot, Slots
from bento.sandbox.spec import CHROMIUM_BINARY, MB, Host, Shape, Spec, enforcement, unenforced

SLOT_PATIENCE = 30.0  # seconds for a killed warm sandbox to give its slot up (it takes milliseconds)
# Sandboxes starting at once, per CPU. Each is forked and moved into its cgroups at once (the
# moves wait on the kernel, not the CPU), then held until it may start: the rest (Python, the
# runtime's imports) is CPU-bound, and 128 let go together share the CPUs and all reach READY
# near the end of the burst; a few at a time reach it one after another, the median in about
# half the time. A host without cgroups holds nothing: its sandboxes start as they are forked.
STARTS_PER_CPU = 4
_HOSTS = itertools.count()  # sandbox hosts of this process (tests and benchmarks make several)


class SandboxUnavailable(Exception):
    """This host cannot confine instances (no bubblewrap, no user namespaces, ...)."""


class SandboxHost:
    def __init__(
        self, policy: NodePolicy, state_dir: Path, *, accept_unenforced: Collection[str] = ()
    ) -> None:
        """``state_dir`` stays private; what instances may read lives in :attr:`root`."""
        for tool in ("bwrap", "prlimit"):
            if shutil.which(tool) is None:
                raise SandboxUnavailable(
                    f"`{tool}` is not installed (Debian: apt-get install bubblewrap util-linux)"
                )
        if not Path(command.PYTHON).exists():
            raise SandboxUnavailable(f"{command.PYTHON} is not installed (Debian: apt-get install python3)")
        if SyscallProfile.CHROMIUM in policy.syscall_profiles and not Path(CHROMIUM_BINARY).exists():
            raise SandboxUnavailable(
                f"the policy offers the chromium profile, but {CHROMIUM_BINARY} is not installed "
                "(Debian: apt-get install chromium), or drop the profile from policy.syscall_profiles"
            )
        self.policy = policy
        self.privileged = os.geteuid() == 0
        self.group = cgroups.bento_group(f"bento-{os.getpid()}-{next(_HOSTS)}")
        self.host = Host(
            privileged=self.privileged,
            cgroup=f"cgroup v{self.group.version}" if self.group else "",
            cgroup_cpu=self.group is not None and ("cpu" in self.group.dirs or self.group.version == 2),
            userns_nproc=watch.userns_nproc(),
        )
        missing = [name for name in unenforced(self.host) if name not in accept_unenforced]
        if missing:
            if self.group is not None:
                self.group.remove()
            raise SandboxUnavailable(
                f"this host cannot enforce: {', '.join(missing)} (no writable cgroup: run as root, or give "
                f"this user a delegated cgroup v2); to run anyway, set accept_unenforced = {missing!r} "
                "in the server config, and the descriptor will say so"
            )
        if self.group is not None:
            # Bento as a whole: the operator's totals, so instances can never starve the relay.
            self.group.limit(
                memory_bytes=policy.total_memory_mb * MB,
                pids=policy.instances_total * policy.instance.processes,
                cpus=policy.total_cpu_share,
            )
        self.root = _work_dir(state_dir)
        self.runtime_dir = self.root / "runtime"
        try:
            self._claim = uids.claim() if self.privileged else None
        except (uids.NoFreeBlock, OSError) as exc:
            raise SandboxUnavailable(str(exc)) from None
        if policy.instances_total > uids.UID_BLOCK:
            raise SandboxUnavailable(
                f"instances_total = {policy.instances_total} is more than the {uids.UID_BLOCK} uids one "
                f"server runs instances as; set instances_total to {uids.UID_BLOCK} or less"
            )
        self.slots = Slots(policy.instances_total)  # the one count of instances (see slots.py)
        self._warming: set[Instance] = set()  # pooled sandboxes not ready yet
        self._cold = 0  # sessions' sandboxes starting without the pool
        self._spawned = itertools.count()
        self._starting = asyncio.Semaphore(STARTS_PER_CPU * (os.cpu_count() or 1))
        self._live: dict[int, Instance] = {}  # by pid: every instance not yet waited for
        watch.become_subreaper()
        self._profiles = frozenset(policy.syscall_profiles)
        self._policy_filter = seccomp.compile_filter(self._profiles, allow_exec=True)
        self.pool = Pool(self._start_pooled, Spec.of(Needs()).shape)
        self.python_version = subprocess.run(
            [command.PYTHON, "-I", "-S", "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        self._install_runtime()
        self.share(self.root)

    def enforced(self) -> dict[str, str]:
        """Which limits this host enforces, and how: published in the descriptor."""
        return enforcement(self.host)

    def _install_runtime(self) -> None:
        """Copy the runtime (standard library only) where sandboxes can read it."""
        import bento

        package = Path(bento.__file__).parent
        target = self.runtime_dir / "bento"
        # The last run's runtime is read-only to us too (see share): a plain rmtree fails on it
        # for a server that is not root, and the mkdir below would then refuse to start the box.
        remove_tree(self.runtime_dir, ignore_errors=True)
        (target / "protocol").mkdir(parents=True)
        (target / "runtime").mkdir()
        (target / "__init__.py").write_text("")
        (target / "protocol" / "__init__.py").write_text("")
        shutil.copy(package / "protocol" / "frames.py", target / "protocol")
        for source in (package / "runtime").glob("*.py"):
            shutil.copy(source, target / "runtime")
        command.byte_compile(self.runtime_dir)
        self.share(self.runtime_dir)

    def share(self, root: Path, *, read_only: bool = False) -> None:
        """Make ``root`` readable by instances (and, when we are root, by nobody else);
        ``read_only``: writable by nobody, the server's own user included (the runtime)."""
        write = 0 if read_only else 0o200
        for path in [root, *root.rglob("*")]:
            # Another pooled slot under the same root may be removed meanwhile (a server
            # stopping removes them in a thread): what is gone needs no sharing.
            with contextlib.suppress(FileNotFoundError):
                if path.is_symlink():
                    continue  # chown and chmod would change what it points to
                # Programs stay programs (Playwright's driver is one), for the group or everyone.
                runs = path.is_dir() or bool(path.stat().st_mode & 0o100)
                if self.privileged:
                    os.chown(path, 0, command.SANDBOX_GID)
                    path.chmod((0o550 if runs else 0o440) | write)
                else:
                    path.chmod((0o555 if runs else 0o444) | write)

    # --- instances: cold, or from the pool ---------------------------------------------

    async def acquire(self, code_dir: Path, needs: Needs) -> Instance:
        """An instance for ``code_dir`` confined by ``needs``: a pooled one of the same shape
        if one waits (its code copied in, its cgroup lowered here, its rlimits and seccomp
        filter lowered by itself from the START frame), else a new one."""
        spec = Spec.of(needs)
        instance = self.pool.take(spec.shape)
        if instance is not None and instance.slot_dir is not None:
            try:  # copying code may take a while: off the event loop
                await asyncio.to_thread(self._fill, code_dir, instance.slot_dir)
            except BaseException:
                instance.kill()  # taken from the pool, never handed out: nobody else would
                raise
            if instance.group is not None:
                instance.group.limit(memory_bytes=spec.memory_bytes, pids=spec.cgroup_pids())
            instance.spec = spec
        else:
            self._cold += 1  # the pool grows no more meanwhile: this start needs the CPU first
            try:
                instance = await self.spawn(code_dir, spec)
                try:
                    async with self._starting:
                        instance.go()
                        await ready(instance)  # not ready: it has exited, and the session says why
                except BaseException:
                    instance.kill()  # never handed out: nobody else would
                    raise
            finally:
                self._cold -= 1
                if not self._cold:
                    self.pool.poke()
        instance.confinement = spec.start_frame(_encoded_filter(spec.syscalls & self._profiles))
        return instance

    def _fill(self, code_dir: Path, slot_dir: Path) -> None:
        shutil.copytree(code_dir, slot_dir, dirs_exist_ok=True)
        self.share(slot_dir)

    async def _start_pooled(self, shape: Shape) -> Instance | None:
        if not (self.root / "pool").exists():
            (self.root / "pool").mkdir()
            self.share(self.root / "pool")  # now, while empty: a full pool's walk costs ms and races
        slot_dir = self.root / "pool" / os.urandom(8).hex()
        slot_dir.mkdir()
        self.share(slot_dir)
        spec = Spec.maxima(self.policy.instance, self._profiles, shape)
        try:
            instance = await self.spawn(slot_dir, spec, pooled=True)  # now one of _warming
        except (OSError, SandboxUnavailable):
            shutil.rmtree(slot_dir, ignore_errors=True)  # empty yet
            return None  # killed for a session's slot as it started, or no slot: the pool waits
        instance.slot_dir = slot_dir
        try:
            async with self._starting:
                instance.go()
                if await ready(instance):
                    return instance
        except BaseException:  # cancelled while it started: it must not outlive the pool
            instance.kill()
            raise
        finally:
            self._warming.discard(instance)
        instance.kill()
        return None

    async def keep_pool(self, least: int, most: int | None = None) -> None:
        """Keep sandboxes started and waiting: as many as were asked for in a recent burst,
        at least ``least`` and at most ``most`` (None: ``least``, a pool of fixed size).
        Owned by the server; cancel to stop."""
        most = least if most is None else max(least, most)
        await self.pool.keep(least, most, lambda: 0 if self._cold else len(self.slots))

    async def watch_forever(self, interval: float = 0.1) -> None:
        """Kill instances over their memory (with all their processes, also where a cgroup
        caps it, as the kernel kills only one), note what they use where no cgroup counts
        it, and reap what killed sandboxes leave behind. Owned by the server; cancel to stop.

        Killing a sandbox kills bubblewrap; its inner process dies with it (die-with-parent)
        but is orphaned first. As a child subreaper we inherit such orphans and must reap
        them, or they linger as zombies.
        """
        for tick in itertools.count():
            await asyncio.sleep(interval)
            for instance in list(self._live.values()):  # procfs and cgroupfs reads: never block
                if instance.group is not None:
                    # The kernel killed one of its processes; the instance goes with it.
                    if instance.group.oom_killed():
                        instance.kill_for_memory()
                    continue
                now = watch.sample(instance.pid)
                instance.peak_resident = max(instance.peak_resident, now.highest)
                instance.cpu_seen = max(instance.cpu_seen, now.cpu_seconds)
                if now.anonymous > instance.spec.memory_bytes:
                    instance.kill_for_memory()
            if tick % 10 == 0:
                watch.reap_orphans(set(self._live))

    async def spawn(self, code_dir: Path, spec: Spec, *, pooled: bool = False) -> Instance:
        """A new sandbox with ``code_dir`` at /function, confined by ``spec``, held until its
        ``go()``; ``pooled``: a warm one for the pool, which only ever takes a free slot."""
        if self._claim is not None:
            await self._claim.ready()  # first, once: a dead server's half-made sandboxes (see uids)
        slot = self.slots.take_free()
        if slot is None and pooled:
            raise SandboxUnavailable("every instance slot is in use")
        if slot is None:
            try:
                slot = await self.slots.wait(self._make_room, SLOT_PATIENCE)
            except NoSlot as exc:
                raise SandboxUnavailable(str(exc)) from None
        ours, theirs = socket.socketpair()
        # The broker keeps message boundaries: one request, one message (bento.server.broker).
        broker_ours, broker_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        group = None
        hold = info = (-1, -1)  # pipes (read end, write end), where the instance has cgroups
        try:
            if self.group is not None:
                # Named afresh: a killed instance's group can outlive it while its processes die.
                group = self.group.child(f"i{next(self._spawned)}")
                group.limit(memory_bytes=spec.memory_bytes, pids=spec.cgroup_pids())
                hold, info = os.pipe(), os.pipe()
            filter_fd = seccomp.memfd(self._policy_filter)
            try:
                where = command.Placement(
                    code_dir=code_dir,
                    runtime_dir=self.runtime_dir,
                    uid=self._claim.base + slot if self._claim else None,
                    hold_fd=hold[0] if group else None,
                    info_fd=info[1] if group else None,
                    channel_fd=theirs.fileno(),
                    broker_fd=broker_theirs.fileno(),
                    filter_fd=filter_fd,
                )
                # Popen only forks and execs (it returns once exec succeeded); the wait is ours.
                process = subprocess.Popen(  # noqa: ASYNC220
                    command.argv(spec, where),
                    pass_fds=where.descriptors(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            finally:
                os.close(filter_fd)
                theirs.close()
                broker_theirs.close()
                for fd in (hold[0], info[1]):
                    if fd >= 0:
                        os.close(fd)
        except BaseException:
            for fd in (hold[1], info[0]):
                if fd >= 0:
                    os.close(fd)
            ours.close()
            broker_ours.close()
            self._release(slot, group)
            raise
        release = functools.partial(self._release, slot, group, process.pid)
        held = hold[1] if group is not None else None  # let go by Instance.go()
        instance = Instance(process, spec, group, release, ours, broker_ours, held)
        self._live[process.pid] = instance
        if pooled:
            self._warming.add(instance)  # from now on, a session short of a slot may kill it
        if group is not None:
            try:  # the grace period it may wait for is the kernel's, in a thread, not the loop's
                await asyncio.to_thread(cgroups.admit_sandbox, group, process.pid, info[0])
            except BaseException:
                self._warming.discard(instance)
                instance.kill()  # its exit releases the slot and the group
                raise
        return instance

    def _make_room(self) -> None:
        """Kill a warm sandbox (a waiting one, else one still starting): its slot goes to an
        admitted session that found none free."""
        if not self.pool.evict() and self._warming:
            self._warming.pop().kill()

    def _release(self, slot: int, group: cgroups.Group | None, pid: int | None = None) -> None:
        if group is not None:
            group.remove()
        self.slots.give(slot)
        self._live.pop(pid or 0, None)
        self.pool.poke()  # room came free: the pool may start one there (or in a victim's place)

    def close(self) -> None:
        # Killed sandboxes leave orphans that die a moment later: reap them before we go,
        # or they outlive us as zombies of whatever reaps (or does not) after us.
        deadline = time.monotonic() + 2.0
        while watch.reap_orphans(set(self._live)) and time.monotonic() < deadline:
            time.sleep(0.02)
        watch.reap_orphans(set(self._live))
        if self.group is not None:
            self.group.remove()
        remove_tree(self.root, ignore_errors=True)
        if self._claim is not None:
            self._claim.release()


@functools.lru_cache(maxsize=16)
def _encoded_filter(profiles: frozenset[SyscallProfile]) -> str:
    """Compiled once per set of profiles: libseccomp takes milliseconds per filter."""
    program = seccomp.compile_filter(profiles, allow_exec=SyscallProfile.PROCESSES in profiles)
    return base64.b64encode(program).decode()


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
        remove_tree(root)
    root.mkdir(mode=0o700)
    return root


def remove_tree(root: Path, *, ignore_errors: bool = False) -> None:
    """``shutil.rmtree``, also where a directory is read-only to us (a sealed runtime, see share)."""

    def writable_then_again(function: Callable[[str], object], path: str, _: object) -> None:
        with contextlib.suppress(*((OSError,) if ignore_errors else ())):
            os.chmod(os.path.dirname(path), 0o700)  # its entries can only go from a writable directory
            function(path)

    shutil.rmtree(root, onerror=writable_then_again)
