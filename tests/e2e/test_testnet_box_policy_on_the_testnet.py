"""`bento testnet run` with the box's size limits: the box it starts publishes them, over Tor.

A second testnet beside the session's one (three relays, one box), so that its policy is
not the shared boxes'; the command run on it reads the box's signed descriptor as any
client does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(300)]

READ_POLICY = """
import asyncio, json, os, subprocess
from bento.client.box import Box

status = json.loads(subprocess.run(
    ["bento", "testnet", "status", "--json", "--dir", os.environ["BENTO_TESTNET_DIR"]],
    capture_output=True, check=True, timeout=60,
).stdout)
onion = next(node["bento"]["onion"] for node in status["nodes"] if node.get("bento"))

async def main():
    async with Box(onion, socks=os.environ["BENTO_SOCKS"]) as box:
        async with asyncio.timeout(120):
            described = await box.descriptor()
    print(json.dumps(described.policy.model_dump(mode="json")))

asyncio.run(main())
"""


def test_testnet_run_starts_boxes_with_the_size_limits_given(tmp_path: Path) -> None:
    bento = Path(sys.executable).with_name("bento")
    run = [
        bento, "testnet", "run", "--dir", str(tmp_path / "net"), "--relays", "3", "--bento-boxes", "1",
        "--corpus-sites", "0", "--instances-total", "300", "--instances-per-function", "150",
    ]  # fmt: skip
    result = subprocess.run(
        [*run, "--", sys.executable, "-c", READ_POLICY],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "PATH": f"{bento.parent}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    policy = json.loads(result.stdout.strip().splitlines()[-1])
    assert (policy["instances_total"], policy["instances_per_function"]) == (300, 150)
    assert policy["network"]["allowed"], "the rest is the testnet's own policy"


def test_a_policy_that_is_not_valid_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bento = Path(sys.executable).with_name("bento")
    file = tmp_path / "policy.toml"
    file.write_text("instances_total = 10\nno_such_limit = 1\n")
    result = subprocess.run(
        [bento, "testnet", "run", "--dir", str(tmp_path / "net"), "--policy", str(file), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no_such_limit" in result.stderr and str(file) in result.stderr
    assert not (tmp_path / "net").exists() or not any((tmp_path / "net").iterdir())
