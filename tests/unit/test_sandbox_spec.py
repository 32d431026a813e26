"""The sandbox as data: the spec, how each of its fields is enforced, and uid-block claims."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from localbox import without_sandbox

from bento.protocol.policy import Needs, NodePolicy, SyscallProfile
from bento.sandbox import cgroups, command, uids
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.sandbox.spec import MB, MECHANISMS, Host, Mount, Shape, Spec, enforcement, spec_fields, unenforced

ROOT_V1 = Host(privileged=True, cgroup="cgroup v1", cgroup_cpu=True, userns_nproc=True)
USER_NO_CGROUP = Host(privileged=False, cgroup="", cgroup_cpu=False, userns_nproc=True)


def test_every_field_of_the_spec_says_how_it_is_enforced() -> None:
    covered = {field for field, _ in MECHANISMS.values() if field}
    assert covered == spec_fields(), "a spec field without a row in MECHANISMS"


def test_the_spec_is_the_needs() -> None:
    needs = Needs(memory_mb=64, cpu_seconds=7, processes=5, open_files=40, scratch_mb=9)
    spec = Spec.of(needs)
    limits = spec.rlimits()
    assert limits["RLIMIT_NPROC"] == 6  # and bubblewrap's init, in the instance's user namespace
    assert limits["RLIMIT_NOFILE"] == 40 and limits["RLIMIT_CPU"] == 7 and limits["RLIMIT_CORE"] == 0
    assert limits["RLIMIT_FSIZE"] == spec.shape.scratch_bytes == 9 * MB
    assert 64 * MB < limits["RLIMIT_DATA"] < 80 * MB
    assert "RLIMIT_NPROC" not in spec.outer_rlimits(), "out there it would count every process of the uid"
    assert spec.syscalls == {SyscallProfile.COMPUTE}
    frozen = spec.start_frame("AAAA")
    assert frozen["rlimits"] == limits and frozen["seccomp"] == "AAAA"


def test_a_pooled_sandbox_fits_only_specs_of_its_shape() -> None:
    policy = NodePolicy()
    small, big = Spec.of(Needs(scratch_mb=4)), Spec.of(Needs(scratch_mb=8))
    pooled = Spec.maxima(policy.instance, frozenset(policy.syscall_profiles), small.shape)
    assert pooled.shape == small.shape != big.shape
    assert pooled.memory_bytes == policy.instance.memory_mb * MB


def test_the_command_line_is_rendered_from_the_spec() -> None:
    spec = Spec.of(Needs(scratch_mb=5))
    spec = Spec(**{**spec.__dict__, "shape": Shape(5 * MB, (Mount("ro-bind", "/data", source="/srv/x"),))})
    where = command.Placement(Path("/code"), Path("/rt"), None, None, None, 3, 4, 5)
    line = command.argv(spec, where)
    assert line[line.index("--tmpfs") - 4 : line.index("--tmpfs") + 2] == [
        "--size", str(5 * MB), "--perms", "1777", "--tmpfs", "/tmp",
    ]  # fmt: skip
    assert line[line.index("/srv/x") - 1 : line.index("/srv/x") + 2] == ["--ro-bind", "/srv/x", "/data"]
    assert f"--fsize={5 * MB}" in line and not any(arg.startswith("--nproc") for arg in line)
    assert "setpriv" not in line, "no uid of its own when the server is not root"
    assert "--block-fd" not in line, "without cgroups, nothing to wait for"
    assert where.descriptors() == (3, 4, 5)
    holding = command.Placement(Path("/code"), Path("/rt"), 200_001, 6, 7, 3, 4, 5)
    assert holding.descriptors() == (3, 4, 5, 6, 7), "every descriptor the command line names is inherited"
    held = command.argv(spec, holding)
    at = held.index("--info-fd")
    assert held[at : at + 4] == ["--info-fd", "7", "--block-fd", "6"]
    assert held[held.index("setpriv") + 1] == "--reuid=200001"


def test_the_descriptor_says_how_each_limit_holds() -> None:
    as_root = enforcement(ROOT_V1)
    assert as_root["processes"] == "RLIMIT_NPROC per user namespace; cgroup v1 pids limit"
    assert as_root["memory"].startswith("cgroup v1 memory limit")
    as_user = enforcement(USER_NO_CGROUP)
    assert as_user["processes"] == "RLIMIT_NPROC per user namespace"
    assert "kills the instance" in as_user["memory"]
    assert unenforced(ROOT_V1) == []
    assert unenforced(USER_NO_CGROUP) == ["cpu_share"]
    old_kernel = Host(privileged=False, cgroup="", cgroup_cpu=False, userns_nproc=False)
    assert unenforced(old_kernel) == ["processes", "cpu_share"]


def test_a_host_that_cannot_enforce_a_limit_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cgroups, "bento_group", lambda name: None)
    with pytest.raises(SandboxUnavailable, match=r"cannot enforce: cpu_share .*accept_unenforced"):
        SandboxHost(NodePolicy(), tmp_path / "state")
    try:
        host = SandboxHost(NodePolicy(), tmp_path / "state", accept_unenforced=["cpu_share"])
    except SandboxUnavailable as exc:
        without_sandbox(exc)
    assert host.enforced()["cpu_share"] == "not enforced"
    host.close()


def test_uid_blocks_are_exclusive_and_a_dead_servers_block_is_taken_over(tmp_path: Path) -> None:
    first = uids.claim(tmp_path)
    second = uids.claim(tmp_path)
    assert second.base == first.base + uids.UID_BLOCK
    # A server killed with SIGKILL: its claim file stays, its lock goes with it.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from bento.sandbox import uids; "
         "uids.claim(Path(sys.argv[1])); print(flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == b"\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2"]
    assert uids.clean_stale(tmp_path) == 0, "a live server's claim is never removed"
    holder.kill()
    holder.wait()
    assert (tmp_path / "2").exists()
    assert uids.clean_stale(tmp_path) == 1  # as `bento testnet down` does
    assert not (tmp_path / "2").exists()
    first.release()
    third = uids.claim(tmp_path)  # the lowest free block again
    assert third.base == first.base
    second.release()
    third.release()
    assert list(tmp_path.iterdir()) == []


CHROMIUM_NEEDS = Needs(
    memory_mb=1024, processes=256, syscall_profiles=[SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM]
)


def test_chromium_gets_a_sandbox_of_its_own_shape_without_address_space_limits() -> None:
    spec = Spec.of(CHROMIUM_NEEDS)
    plain = Spec.of(Needs(memory_mb=1024, processes=256, syscall_profiles=[SyscallProfile.PROCESSES]))
    assert spec.shape.chromium and spec.shape != plain.shape, "never a pooled sandbox of the plain shape"
    assert spec.rlimits()["RLIMIT_AS"] == spec.rlimits()["RLIMIT_DATA"] == -1  # it cannot start under either
    assert plain.rlimits()["RLIMIT_DATA"] < 2048 * MB
    assert (
        spec.rlimits()["RLIMIT_NPROC"] == 257
        and spec.rlimits()["RLIMIT_CPU"] == plain.rlimits()["RLIMIT_CPU"]
    )
    line = command.argv(spec, command.Placement(Path("/code"), Path("/rt"), None, None, None, 3, 4, 5))
    assert "--as=unlimited" in line and "--data=unlimited" in line
    if Path("/etc/fonts").is_dir():
        assert line[line.index("/etc/fonts") - 1 : line.index("/etc/fonts") + 2] == [
            "--ro-bind", "/etc/fonts", "/etc/fonts",
        ]  # fmt: skip
    # How its memory is held instead, in the descriptor:
    assert "cgroup v1 memory limit" in enforcement(ROOT_V1)["chromium"]
    assert "watchdog" in enforcement(USER_NO_CGROUP)["chromium"]


def test_the_chromium_profile_comes_with_processes_and_playwright() -> None:
    with pytest.raises(ValueError, match="needs the processes profile"):
        Needs(syscall_profiles=[SyscallProfile.CHROMIUM])
    with pytest.raises(ValueError, match="'playwright'"):
        NodePolicy(syscall_profiles=[SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM])
    NodePolicy(syscall_profiles=[SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM], packages=["playwright"])


def test_the_runtime_is_byte_compiled_for_the_sandboxs_python(tmp_path: Path) -> None:
    """A sandbox cannot write bytecode (its root is read-only): without a .pyc beside every
    module, each cold start would compile the runtime again (20 ms, bench/sandbox_startup.py)."""
    try:
        host = SandboxHost(NodePolicy(), tmp_path / "state")
    except SandboxUnavailable as exc:
        without_sandbox(exc)
    try:
        sources = sorted(host.runtime_dir.rglob("*.py"))
        assert sources
        # What the import system checks before it uses a .pyc: its magic number, and the
        # modification time of its source (flags 0: a timestamp .pyc).
        probe = (
            "import importlib.util, marshal, os, struct, sys\n"
            "for path in sys.argv[1:]:\n"
            "    data = open(importlib.util.cache_from_source(path), 'rb').read()\n"
            "    magic, flags, mtime = data[:4], *struct.unpack('<II', data[4:12])\n"
            "    assert magic == importlib.util.MAGIC_NUMBER and flags == 0, path\n"
            "    assert mtime == int(os.stat(path).st_mtime) & 0xFFFFFFFF, path\n"
            "    assert marshal.loads(data[16:]).co_filename.startswith('/opt/bento/'), path\n"
        )
        subprocess.run([command.PYTHON, "-I", "-S", "-c", probe, *map(str, sources)], check=True, timeout=60)
    finally:
        host.close()


class _Recorded:
    def __init__(self) -> None:
        self.admitted: list[int] = []

    def admit(self, pid: int) -> None:
        self.admitted.append(pid)


def test_a_sandbox_is_admitted_whatever_its_descriptors_numbers() -> None:
    """A box of hundreds of instances holds thousands of descriptors: select() refused any
    past 1023 (ValueError), and a 500-session burst failed every session."""
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        info = os.pipe()
        assert info[0] >= 1024
        os.write(info[1], b'{"child-pid": 4242}')
        os.close(info[1])
        group = _Recorded()
        cgroups.admit_sandbox(group, 4241, info[0])  # type: ignore[arg-type]
        assert group.admitted == [4241, 4242]
    finally:
        for fd in filler:
            os.close(fd)


def test_a_sandbox_is_admitted_with_both_its_processes_or_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    group = _Recorded()
    info = os.pipe()
    os.write(info[1], b'{\n    "child-pid": 4242,\n    "pid-namespace": 1\n}\n')
    os.close(info[1])
    cgroups.admit_sandbox(group, 4241, info[0])  # type: ignore[arg-type]
    assert group.admitted == [4241, 4242]  # (no such processes: a fake group admits anything)
    # bubblewrap that names nothing (it died, or says something else): an error, and it is
    # killed, so that its hold (the host's, let go by Instance.go) can let nothing start.
    monkeypatch.setattr(cgroups, "ADMIT_PATIENCE", 0.2)
    for said in (b"", b"not json", None):  # None: it says nothing at all, and keeps its end open
        bubblewrap = subprocess.Popen(["sleep", "60"])  # stands for it: it must be killed
        info = os.pipe()
        if said is not None:
            os.write(info[1], said)
            os.close(info[1])
        with pytest.raises(OSError, match="bubblewrap did not name"):
            cgroups.admit_sandbox(_Recorded(), bubblewrap.pid, info[0])  # type: ignore[arg-type]
        if said is None:
            os.close(info[1])
        assert bubblewrap.wait(timeout=10) == -signal.SIGKILL, "killed"
