"""Every limit of the manifest holds in every path: a cold sandbox, a pooled one, and a host
without cgroups (as when the server runs as a dedicated user): same functions, same bounds.

Real sandboxes (bubblewrap, seccomp, rlimits, cgroups where ours), driven in process
through the registry as the API drives it. The pooled sandboxes are started under the
policy's maxima (far above these needs), so each bound below also shows that a pooled
sandbox was lowered to the manifest's needs.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from localbox import without_sandbox

from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind, EndCause, SessionState
from bento.protocol.policy import Needs, NodePolicy, SyscallProfile
from bento.sandbox import cgroups
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.sandbox.spec import MB, Spec
from bento.server.broker import closed_gate
from bento.server.config import ServerConfig
from bento.server.function import Function
from bento.server.registry import Registry
from bento.server.session import Session

pytestmark = pytest.mark.timeout(120)

NEEDS = Needs(memory_mb=48, cpu_seconds=5, wall_seconds=30, processes=4, open_files=32, scratch_mb=3)
FORKING = NEEDS.model_copy(update={"syscall_profiles": [SyscallProfile.COMPUTE, SyscallProfile.PROCESSES]})
CHROMIUM = NEEDS.model_copy(
    update={"syscall_profiles": [SyscallProfile.COMPUTE, SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM]}
)
# Chromium offered too: every other function must still get no more than its own profiles.
POLICY = NodePolicy(
    syscall_profiles=[SyscallProfile.COMPUTE, SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM],
    packages=["playwright"],  # the policy must name it; these functions do not import it
)

CODE = """
import ctypes, errno, os, resource, time

def _name(exc):
    number = exc if isinstance(exc, int) else exc.errno
    return errno.errorcode.get(number, str(number))

def rlimits():
    names = ("NPROC", "DATA", "AS", "NOFILE", "FSIZE", "CPU", "CORE")
    return {n: list(resource.getrlimit(getattr(resource, "RLIMIT_" + n))) for n in names}

def scratch_files():
    written = 0
    try:
        for i in range(1000):
            with open(f"/tmp/f{i}", "wb") as out:
                out.write(bytes(1 << 20))
            written += 1 << 20
    except OSError as exc:
        return {"error": _name(exc), "written": written}

def scratch_one_file():
    written = 0
    with open("/tmp/big", "wb", buffering=0) as out:
        try:
            for _ in range(1000):
                written += out.write(bytes(1 << 20))
        except OSError as exc:
            return {"error": _name(exc), "written": written}

def memory():
    chunks = []
    while True:
        chunks.append(bytearray(1 << 20))

def memory_in_processes():
    for _ in range(3):
        if os.fork() == 0:
            try:
                chunks = [bytearray(1 << 20) for _ in range(40)]
            except MemoryError:
                os._exit(3)
            time.sleep(30)
            os._exit(0)
    time.sleep(30)

def files():
    opened = []
    try:
        while True:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        return {"error": _name(exc), "opened": len(opened)}

def _interfaces():
    # SIOCGIFCONF: the interfaces of the socket's network (through a granted socket, the box's)
    import fcntl, socket
    unix, _ = socket.socketpair()
    try:
        fcntl.ioctl(unix, 0x8912, bytes(16))  # struct ifconf with no buffer: the length it needs
        return True
    except OSError as exc:
        return _name(exc)

def syscalls():
    libc = ctypes.CDLL(None, use_errno=True)
    found = {"SIOCGIFCONF": _interfaces()}
    found["mount"] = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 or _name(ctypes.get_errno())
    found["unshare"] = libc.unshare(0x10000000) == 0 or _name(ctypes.get_errno())
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        found["fork"] = True
    except OSError as exc:
        found["fork"] = _name(exc)
    return found

def chromium_calls():
    import socket
    libc = ctypes.CDLL(None, use_errno=True)
    found = {"SIOCGIFCONF": _interfaces()}
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("/tmp/singleton")
    unix.listen()
    found["unix listener"] = True
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
        try:
            socket.socket(family, socket.SOCK_DGRAM).close()
            found[family.name] = True
        except OSError as exc:
            found[family.name] = _name(exc)
    found["mount"] = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 or _name(ctypes.get_errno())
    found["unshare"] = libc.unshare(0x10000000) == 0 or _name(ctypes.get_errno())
    return found

def held_with_a_child():
    from bento.runtime import api
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    api.send(b"forked")
    api.recv()  # until the test closes the input
    return child

def fork_bomb():
    children = 0
    try:
        while True:
            if os.fork() == 0:
                time.sleep(10)
                os._exit(0)
            children += 1
    except OSError as exc:
        return {"error": _name(exc), "children": children}
"""


class Box:
    def __init__(self, registry: Registry, sandbox: SandboxHost, pooled: bool) -> None:
        self.registry, self.sandbox, self.pooled = registry, sandbox, pooled
        self.functions: dict[str, Function] = {}

    async def run(self, entry: str, needs: Needs = NEEDS) -> Session:
        profiles = needs.syscall_profiles
        name = (
            "chromium"
            if SyscallProfile.CHROMIUM in profiles
            else "forker"
            if SyscallProfile.PROCESSES in profiles
            else "limits"
        )
        if name not in self.functions:
            code = base64.b64encode(CODE.encode()).decode()
            deployed = await self.registry.deploy(Manifest(name=name, needs=needs), CodeKind.MODULE, code)
            self.functions[name] = deployed.function
        if self.pooled:
            async with asyncio.timeout(30):
                await self.sandbox.pool.stocked(Spec.of(needs).shape)
        session = self.registry.invoke(self.functions[name], entry, [], {})
        async with asyncio.timeout(60):
            await session.done.wait()
        assert session.instance is not None
        assert (session.instance.slot_dir is not None) is self.pooled, "the path under test was not taken"
        return session


@pytest.fixture(params=["cold", "pooled", "cold-no-cgroups", "pooled-no-cgroups"])
async def box(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Box]:
    if request.param.endswith("no-cgroups"):
        # The host a dedicated user gets on cgroup v1: none of ours (the server is still root here).
        monkeypatch.setattr(cgroups, "bento_group", lambda name: None)
    with tempfile.TemporaryDirectory(prefix="bento-unit-") as tmp:
        config = ServerConfig(state_dir=Path(tmp) / "state", policy=POLICY, onion=False, advertise=False)
        try:
            sandbox = SandboxHost(config.policy, config.state_dir, accept_unenforced=["cpu_share"])
        except SandboxUnavailable as exc:
            without_sandbox(exc)
        registry = Registry(config, "limits", sandbox, closed_gate())
        registry.reset_storage()
        pooled = request.param.startswith("pooled")
        tasks = [asyncio.ensure_future(sandbox.watch_forever())]
        if pooled:
            tasks.append(asyncio.ensure_future(sandbox.keep_pool(2)))
        try:
            async with registry.running():
                yield Box(registry, sandbox, pooled)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sandbox.close()


def _result(session: Session) -> Any:
    assert session.state is SessionState.COMPLETED, (session.cause, session.reason)
    return session.result


async def test_rlimits_are_the_manifests(box: Box) -> None:
    limits = _result(await box.run("rlimits"))
    assert limits["NPROC"] == [NEEDS.processes + 1] * 2  # and bubblewrap's init
    assert limits["NOFILE"] == [NEEDS.open_files] * 2
    assert limits["FSIZE"] == [NEEDS.scratch_mb * MB] * 2
    assert limits["CPU"] == [NEEDS.cpu_seconds, NEEDS.cpu_seconds + 1]
    assert limits["DATA"] == [Spec.of(NEEDS).rlimits()["RLIMIT_DATA"]] * 2
    assert limits["CORE"] == [0, 0]


async def test_scratch_is_the_manifests(box: Box) -> None:
    files = _result(await box.run("scratch_files"))  # many files: the tmpfs is full
    assert files["error"] == "ENOSPC", files
    assert (NEEDS.scratch_mb - 1) * MB <= files["written"] <= NEEDS.scratch_mb * MB, files
    one = _result(await box.run("scratch_one_file"))  # one file: RLIMIT_FSIZE
    assert one == {"error": "EFBIG", "written": NEEDS.scratch_mb * MB}


async def test_memory_is_the_manifests(box: Box) -> None:
    session = await box.run("memory")
    assert session.cause is EndCause.MEMORY, (session.cause, session.reason)
    bound = Spec.of(NEEDS).rlimits()["RLIMIT_DATA"] + 24 * MB  # and the interpreter's binary and libraries
    assert session.usage.peak_memory_bytes <= bound, session.usage
    if box.sandbox.group is not None:  # the cgroup's peak; else the watchdog's samples, which may miss it
        assert session.usage.peak_memory_bytes > 0


async def test_memory_of_all_processes_together_is_capped(box: Box) -> None:
    """Three processes of 40 MB each are within RLIMIT_DATA one by one, not together."""
    session = await box.run("memory_in_processes", FORKING)
    assert session.cause is EndCause.MEMORY, (session.cause, session.reason)


async def test_open_files_are_the_manifests(box: Box) -> None:
    files = _result(await box.run("files"))
    assert files["error"] == "EMFILE" and files["opened"] <= NEEDS.open_files, files


async def test_syscalls_are_the_manifests(box: Box) -> None:
    found = _result(await box.run("syscalls"))
    assert found == {"mount": "EPERM", "unshare": "EPERM", "fork": "EPERM", "SIOCGIFCONF": "EPERM"}
    found = _result(await box.run("syscalls", FORKING))
    assert found == {"mount": "EPERM", "unshare": "EPERM", "fork": True, "SIOCGIFCONF": "EPERM"}


async def test_processes_are_the_manifests(box: Box) -> None:
    bomb = _result(await box.run("fork_bomb", FORKING))
    assert bomb == {"error": "EAGAIN", "children": NEEDS.processes - 1}  # its own process counts


async def test_a_chromium_sandbox_holds_memory_without_address_space_limits(box: Box) -> None:
    if box.pooled:
        pytest.skip("a chromium sandbox has a shape of its own: it is never pooled")
    limits = _result(await box.run("rlimits", CHROMIUM))
    assert limits["DATA"] == limits["AS"] == [-1, -1]  # chromium cannot start under either
    assert limits["NPROC"] == [NEEDS.processes + 1] * 2 and limits["CPU"] == [
        NEEDS.cpu_seconds,
        NEEDS.cpu_seconds + 1,
    ]
    session = await box.run("memory", CHROMIUM)  # the cgroup, or else the watchdog, stops it
    assert session.cause is EndCause.MEMORY, (session.cause, session.reason)
    found = _result(await box.run("chromium_calls", CHROMIUM))
    assert found == {
        "unix listener": True, "AF_INET": "EPERM", "AF_INET6": "EPERM", "AF_NETLINK": "EPERM",
        "mount": "EPERM", "unshare": "EPERM", "SIOCGIFCONF": "EPERM",
    }  # fmt: skip


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants, as the kernel lists them."""
    found = {pid}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found |= _tree(int(child))
    return found


async def test_every_process_of_a_sandbox_is_in_its_cgroups(box: Box) -> None:
    """bubblewrap, its init, Python and what the function forks: moved while bubblewrap
    builds the sandbox (bento.sandbox.host), never one left behind in the server's group."""
    if box.sandbox.group is None:
        pytest.skip("no cgroups on this path: the rlimits and the watchdog hold instead")
    deployed = await box.registry.deploy(
        Manifest(name="held", needs=FORKING), CodeKind.MODULE, base64.b64encode(CODE.encode()).decode()
    )
    if box.pooled:
        async with asyncio.timeout(30):
            await box.sandbox.pool.stocked(Spec.of(FORKING).shape)
    session = box.registry.invoke(deployed.function, "held_with_a_child", [], {})
    async with asyncio.timeout(30):
        assert await session.output.read(0) == b"forked"
    assert session.instance is not None and session.instance.group is not None
    processes = _tree(session.instance.pid)
    assert len(processes) >= 4, processes  # bubblewrap, its init, Python, the function's child
    for directory in session.instance.group.dirs.values():
        members = {int(pid) for pid in (directory / "cgroup.procs").read_text().split()}
        assert processes <= members, (directory, processes - members)
    await session.close_input()
    async with asyncio.timeout(30):
        await session.done.wait()
    assert session.state is SessionState.COMPLETED, (session.cause, session.reason)
