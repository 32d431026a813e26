"""A box of hundreds of instances raises its own limit on open files, or says why it cannot.

Run in a child process: lowering a hard limit cannot be undone there.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src"

PROBE = """
import resource, sys
from bento.server import open_files
soft, hard = (int(x) for x in sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
said = open_files.raise_for(500)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(said or "")
"""


def run_with(soft: int, hard: int) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(soft), str(hard)],
        env={**os.environ, "PYTHONPATH": str(SOURCE)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    limit, said = done.stdout.split("\n", 1)
    return int(limit), said.strip()


def test_the_soft_limit_is_raised_to_what_500_instances_need() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # only root may raise it
    if hard != resource.RLIM_INFINITY and hard < 9024:
        pytest.skip(f"this process's hard limit ({hard}) is below what the test needs")
    limit, said = run_with(1024, hard)  # systemd's default soft limit
    assert (limit, said) == (9024, "")


def test_a_hard_limit_too_low_is_reached_and_named_with_its_fix() -> None:
    limit, said = run_with(256, 2048)
    assert limit == 2048
    assert "LimitNOFILE=9024" in said and "sessions past about 64" in said, said
