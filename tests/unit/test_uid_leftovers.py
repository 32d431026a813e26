"""A box that claims a block of sandbox uids first kills what a dead server left running under them."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from localbox import without_sandbox

from bento.protocol.policy import Needs, NodePolicy
from bento.sandbox import uids
from bento.sandbox.host import SandboxHost, SandboxUnavailable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a server run as root claims sandbox uids")

# The last block: a real box takes it only with 999 other Bento servers on this host.
LAST = uids.BLOCKS - 1


def test_a_claim_kills_the_processes_a_dead_server_left_under_its_uids(tmp_path: Path) -> None:
    claim = uids.Claim(LAST, -1, tmp_path / str(LAST))
    leftovers = [
        subprocess.Popen(["sleep", "300"], user=claim.base + slot, group=claim.base + slot)
        for slot in (0, 7, uids.UID_BLOCK - 1)
    ]
    neighbour = subprocess.Popen(["sleep", "300"], user=claim.base + uids.UID_BLOCK)  # not this block's
    try:
        assert asyncio.run(claim.evict_leftovers()) == 3
        for process in leftovers:
            assert process.wait(timeout=10) == -9
        assert neighbour.poll() is None, "a uid outside the block is not the claim's to kill"
        assert asyncio.run(claim.evict_leftovers()) == 0
    finally:
        for process in [*leftovers, neighbour]:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.timeout(60)
async def test_a_host_evicts_before_its_first_sandbox_not_in_its_constructor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The constructor may run where an event loop does: it waits for nothing; the eviction
    runs, on the loop, before the first sandbox starts under the block's uids."""
    claim = uids.Claim(LAST, -1, tmp_path / str(LAST))
    monkeypatch.setattr(uids, "claim", lambda: claim)
    leftover = await asyncio.create_subprocess_exec("sleep", "300", user=claim.base + 3, group=claim.base + 3)
    try:
        try:
            host = SandboxHost(NodePolicy(), tmp_path / "state", accept_unenforced=["cpu_share"])
        except SandboxUnavailable as exc:
            without_sandbox(exc)
        try:
            assert _alive(leftover.pid), "the constructor killed nothing, and so waited for nothing"
            code = host.root / "code"
            code.mkdir()
            (code / "main.py").write_text("def main():\n    pass\n")
            host.share(code)
            instance = await host.acquire(code, Needs())
            assert await asyncio.wait_for(leftover.wait(), 10) == -9, (
                "killed before the first sandbox started"
            )
            instance.kill()
        finally:
            host.close()
    finally:
        if leftover.returncode is None:
            leftover.kill()
            await asyncio.wait_for(leftover.wait(), 10)


def _alive(pid: int) -> bool:
    """Running, not a zombie (a killed child stays one until it is reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # reaped already
        return False
    return next(line for line in status.splitlines() if line.startswith("State:")).split()[1] != "Z"
