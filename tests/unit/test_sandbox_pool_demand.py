"""The pool of warm sandboxes follows demand: a burst teaches it to hold as many, and it
shrinks back once the bursts stop. Each sandbox it hands out is a whole one of its own,
confined as a cold one is.

The pool's memory of demand runs on a clock the tests move (waiting minutes for a burst to
be forgotten would prove nothing more); the sandboxes are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from localbox import without_sandbox
from pydantic import ValidationError

from bento.protocol.policy import InstanceLimits, Needs, NodePolicy
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.sandbox.instance import Instance
from bento.sandbox.pool import BURST_WINDOW, MEMORY, Demand, Pool
from bento.sandbox.spec import Shape, Spec
from bento.server.config import ServerConfig

BURST = 4
SHAPE = Spec.of(Needs()).shape


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def host() -> AsyncIterator[tuple[SandboxHost, Path, Clock]]:
    scratch = Path(tempfile.mkdtemp(prefix="bento-unit-"))
    policy = NodePolicy(instances_total=2 * BURST + 2, instance=InstanceLimits(memory_mb=256))
    try:
        try:
            sandbox = SandboxHost(policy, scratch / "state", accept_unenforced=["cpu_share"])
        except SandboxUnavailable as exc:
            without_sandbox(exc)
        clock = Clock()
        sandbox.pool.demand = Demand(clock=clock)
        watchdog = asyncio.ensure_future(sandbox.watch_forever())  # it reaps what killed sandboxes leave
        code = sandbox.root / "code"  # where instances may read it, as a function's code is
        code.mkdir()
        (code / "main.py").write_text("def main():\n    pass\n")
        sandbox.share(code)
        try:
            yield sandbox, code, clock
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            sandbox.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.asynccontextmanager
async def kept(sandbox: SandboxHost, least: int, most: int) -> AsyncIterator[None]:
    keeper = asyncio.ensure_future(sandbox.keep_pool(least, most))
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def burst(sandbox: SandboxHost, code: Path, count: int) -> list[Instance]:
    return await asyncio.gather(*(sandbox.acquire(code, Needs()) for _ in range(count)))


async def ended(instances: list[Instance]) -> None:
    for instance in instances:
        instance.kill()
    async with asyncio.timeout(30):
        await asyncio.gather(*(i.wait() for i in instances))


async def until(condition: Callable[[], bool], what: str, patience: float = 30.0) -> None:
    """Poll real state until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + patience
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {patience} s: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(180)
async def test_the_pool_grows_to_a_burst_and_shrinks_back_once_bursts_stop(
    host: tuple[SandboxHost, Path, Clock],
) -> None:
    sandbox, code, clock = host
    async with kept(sandbox, least=1, most=BURST):
        async with asyncio.timeout(60):
            await sandbox.pool.stocked(SHAPE)
        first = await burst(sandbox, code, BURST)
        assert sum(i.slot_dir is not None for i in first) == 1, "one was waiting; the rest started cold"
        await ended(first)

        async with asyncio.timeout(60):  # the burst taught it: as many wait for the next one
            await sandbox.pool.stocked(SHAPE, BURST)
        second = await burst(sandbox, code, BURST)
        assert all(i.slot_dir is not None for i in second), "the whole next burst came from the pool"
        assert len({i.pid for i in first + second}) == 2 * BURST, "never a sandbox twice"
        await ended(second)
        async with asyncio.timeout(60):
            await sandbox.pool.stocked(SHAPE, BURST)

        clock.now += MEMORY + 2 * BURST_WINDOW  # no burst for longer than the pool remembers one
        sandbox.pool.poke()
        await until(lambda: len(sandbox.pool) == 1, "the pool back at its least size")
        assert sandbox.pool.target(1, BURST) == 1
        await until(lambda: len(sandbox.slots) == 2 * BURST + 1, "the others' slots given back")


@pytest.mark.timeout(180)
async def test_a_sandbox_from_a_grown_pool_is_as_isolated_as_a_cold_one(
    host: tuple[SandboxHost, Path, Clock],
) -> None:
    sandbox, code, _ = host
    cold = await sandbox.acquire(code, Needs())  # no pool kept yet: started cold
    assert cold.slot_dir is None
    for _ in range(BURST - 1):
        sandbox.pool.take(SHAPE)  # asked for: the pool learns a burst of BURST
    async with kept(sandbox, least=0, most=BURST):
        async with asyncio.timeout(60):
            await sandbox.pool.stocked(SHAPE, BURST)
        pooled = await burst(sandbox, code, BURST)
        assert all(i.slot_dir is not None for i in pooled)
        try:
            seen = [confinement(i) for i in [cold, *pooled]]
            ours = {name: os.readlink(f"/proc/self/ns/{name}") for name in NAMESPACES}
            for name in NAMESPACES:
                each = [s["ns"][name] for s in seen]
                assert len(set(each)) == len(each), f"a {name} namespace of each instance's own"
                assert ours[name] not in each, f"no instance in the server's {name} namespace"
            if sandbox.privileged:
                uids = [s["uid"] for s in seen]
                assert len(set(uids)) == len(uids) and os.geteuid() not in uids, "a uid of each one's own"
            if sandbox.group is not None:
                groups = [s["cgroup"] for s in seen]
                assert len(set(groups)) == len(groups), "a cgroup of each one's own"
            for instance, view in zip([cold, *pooled], seen, strict=True):
                assert (view["seccomp"], view["no_new_privs"]) == ("2", "1"), "the policy filter is on"
                # Handed out, a pooled one is confined by the function's needs, as a cold one is.
                assert instance.spec == cold.spec and instance.confinement == cold.confinement
        finally:
            await ended([cold, *pooled])


NAMESPACES = ("user", "pid", "net", "mnt", "ipc", "uts", "cgroup")


def confinement(instance: Instance) -> dict[str, object]:
    """What the host sees of an instance's sandbox: bubblewrap's child, inside every namespace."""
    children = Path(f"/proc/{instance.pid}/task/{instance.pid}/children").read_text().split()
    assert len(children) == 1, "bubblewrap has one child: the sandbox"
    inner = Path(f"/proc/{children[0]}")
    status = dict(line.split(":\t", 1) for line in (inner / "status").read_text().splitlines())
    return {
        "ns": {name: os.readlink(inner / "ns" / name) for name in NAMESPACES},
        "uid": int(status["Uid"].split()[0]),
        "cgroup": (inner / "cgroup").read_text(),
        "seccomp": status["Seccomp"].strip(),
        "no_new_privs": status["NoNewPrivs"].strip(),
    }


class Unstarted:
    """What the pool keeps of a sandbox (its shape, whether it lives, its kill), where the
    test is about the pool's own bookkeeping and not about sandboxes."""

    def __init__(self, shape: Shape) -> None:
        self.spec = dataclasses.replace(Spec.of(Needs()), shape=shape)
        self.process = subprocess.CompletedProcess[bytes]([], returncode=None)  # type: ignore[arg-type]

    def kill(self) -> None:
        self.process.returncode = -9


@pytest.mark.timeout(30)
async def test_a_pool_whose_start_failed_tries_again_a_window_later() -> None:
    attempts = 0

    async def start(shape: Shape) -> Instance | None:
        nonlocal attempts
        attempts += 1
        return None if attempts == 1 else Unstarted(shape)  # type: ignore[return-value]

    pool = Pool(start, SHAPE)
    keeper = asyncio.ensure_future(pool.keep(1, 1, room=lambda: 10))
    try:
        async with asyncio.timeout(3 * BURST_WINDOW):  # not stuck until someone asks again
            await pool.stocked(SHAPE)
        assert attempts == 2, "one failed start, one more a window later, not a tight loop"
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


@pytest.mark.timeout(30)
async def test_a_full_pool_gives_a_shape_asked_for_before_up_for_as_many_as_a_burst_asks_now() -> None:
    other = Spec.of(Needs(scratch_mb=4)).shape  # another function's /tmp: its sandboxes cannot serve ours
    started: list[Unstarted] = []

    async def start(shape: Shape) -> Instance | None:
        started.append(Unstarted(shape))
        return started[-1]  # type: ignore[return-value]

    def held() -> list[Shape]:
        return sorted((i.spec.shape for i in pool.idle), key=lambda shape: shape == SHAPE)

    pool = Pool(start, other)
    for _ in range(BURST):
        assert pool.take(other) is None  # a burst of the other function's: the pool learns BURST
    keeper = asyncio.ensure_future(pool.keep(0, BURST, room=lambda: 2 * BURST))
    try:
        async with asyncio.timeout(5):
            await pool.stocked(other, BURST)
        for _ in range(2):  # a small burst of ours: the other's keep the rest of the pool
            assert pool.take(SHAPE) is None, "none of ours waits yet"
        async with asyncio.timeout(5):
            await pool.stocked(SHAPE, 2)
        await until(lambda: len(pool) == BURST, "the pool full again")
        assert held() == [other] * (BURST - 2) + [SHAPE] * 2

        for _ in range(BURST - 2):  # a burst of ours as large as the pool: all the other's give way
            pool.take(SHAPE)
        async with asyncio.timeout(5):
            await pool.stocked(SHAPE, BURST)
        assert held() == [SHAPE] * BURST
        assert all(i.process.returncode is not None for i in started if i.spec.shape == other)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


def test_the_pool_grows_at_most_to_pool_max_and_by_default_to_the_boxs_cap() -> None:
    policy = NodePolicy(instances_total=40)
    assert ServerConfig(policy=policy).pool_most == 40
    assert ServerConfig(policy=policy, pool_max=16).pool_most == 16
    assert ServerConfig(policy=policy, pool_size=8, pool_max=4).pool_most == 8, "never below pool_size"
    with pytest.raises(ValidationError):
        ServerConfig(pool_max=-1)
