"""A burst of cold starts goes a few at a time, each started instance ready when handed out.

A sandbox's start is CPU-bound once it is in its cgroups; all of a burst let go together
would share the CPUs and be ready together, near the end. The host lets a few go at once
(its gate), so they are ready one after another; every one still gets a sandbox of its own.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from localbox import without_sandbox

from bento.protocol.frames import HEADER
from bento.protocol.policy import Needs, NodePolicy
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.sandbox.instance import Instance
from bento.sandbox.spec import Spec

AT_ONCE = 2  # a gate of two, so that six starts must queue
BURST = 6


@pytest.fixture
def host() -> Iterator[SandboxHost]:
    scratch = Path(tempfile.mkdtemp(prefix="bento-unit-"))
    try:
        try:
            sandbox = SandboxHost(NodePolicy(), scratch / "state", accept_unenforced=["cpu_share"])
        except SandboxUnavailable as exc:
            without_sandbox(exc)
        try:
            yield sandbox
        finally:
            sandbox.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.timeout(120)
async def test_a_burst_of_cold_starts_goes_a_few_at_a_time(
    host: SandboxHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    host._starting = asyncio.Semaphore(AT_ONCE)
    starting = 0
    most = 0
    spawn = host.spawn

    async def counted(code_dir: Path, spec: Spec, *, pooled: bool = False) -> Instance:
        instance = await spawn(code_dir, spec, pooled=pooled)  # forked, in its cgroups, held
        let_go = instance.go

        def go() -> None:  # it starts now, and counts as starting until acquire hands it out
            nonlocal starting, most
            starting += 1
            most = max(most, starting)
            let_go()

        instance.go = go  # type: ignore[method-assign]
        return instance

    monkeypatch.setattr(host, "spawn", counted)
    code = host.root / "code"  # where instances may read it, as a function's code is
    code.mkdir()
    (code / "main.py").write_text("def main():\n    pass\n")
    host.share(code)
    instances: list[Instance] = []
    try:

        async def cold() -> Instance:
            nonlocal starting
            instance = await host.acquire(code, Needs())
            starting -= 1  # handed out: ready
            instances.append(instance)
            return instance

        await asyncio.gather(*(cold() for _ in range(BURST)))
        assert most == AT_ONCE, f"{most} sandboxes started at once, the gate lets {AT_ONCE}"
        assert len({i.pid for i in instances}) == BURST, "each its own sandbox"
        for instance in instances:
            assert instance.process.returncode is None, "handed out alive"
            # READY was taken before it was handed out: what comes next is for the session.
            instance.channel.setblocking(False)
            with pytest.raises(BlockingIOError):
                instance.channel.recv(HEADER.size)
    finally:
        for instance in instances:
            instance.kill()
        await asyncio.gather(*(i.wait() for i in instances))
