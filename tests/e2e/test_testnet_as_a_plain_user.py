"""A plain user (not root) runs a testnet with a Bento box, as most people run things:
the box accepts what it cannot enforce without a cgroup, says so once, and serves."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bento.testnet import boxes

PLAIN_USER = "bento-e2e"  # made by tests/conftest.py for the box of a dedicated user

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(900)]


def test_a_plain_user_runs_a_testnet_whose_box_serves() -> None:
    if os.geteuid() != 0:
        pytest.skip("run as root, to run the testnet as another user")
    try:
        account = pwd.getpwnam(PLAIN_USER)
    except KeyError:
        pytest.skip(f"no user {PLAIN_USER}")
    python = boxes.interpreter_for(account.pw_uid)
    if python is None:
        pytest.skip(f"{PLAIN_USER} cannot import Bento from this checkout")
    home = Path(tempfile.mkdtemp(prefix="bento-plain-testnet-"))
    os.chown(home, account.pw_uid, account.pw_gid)
    drop = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
    path = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": path}
    env.pop("BENTO_SOCKS", None)
    env.pop("BENTO_CONTROL", None)
    command = [
        *drop, python, "-m", "bento", "testnet", "run", "--bento-boxes", "1", "--dir", str(home / "net"),
        "--", python, "-m", "bento", "descriptor", "exit0", "--json",
    ]  # fmt: skip
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=840, cwd=home, env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert run.returncode == 0, f"stdout: {run.stdout}\nstderr: {run.stderr}"
    assert "Traceback" not in run.stderr
    said = [line for line in run.stderr.splitlines() if "run without root" in line]
    assert len(said) == 1, run.stderr
    descriptor = json.loads(run.stdout)
    isolation = descriptor["runtime"]["isolation"]
    assert "cpu_share" in isolation, isolation  # how each limit is enforced: said, not hidden
