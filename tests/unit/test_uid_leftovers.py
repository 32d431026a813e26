"""A box that claims a block of sandbox uids first kills what a dead server left running under them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bento.sandbox import uids

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
        assert claim.evict_leftovers() == 3
        for process in leftovers:
            assert process.wait(timeout=10) == -9
        assert neighbour.poll() is None, "a uid outside the block is not the claim's to kill"
        assert claim.evict_leftovers() == 0
    finally:
        for process in [*leftovers, neighbour]:
            process.kill()
            process.wait(timeout=10)
