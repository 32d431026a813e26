"""Blinded tokens over Tor: the owner hands out single-use capabilities; each works once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from functions import HELLO
from support import TIMEOUT

from bento.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]


def test_handed_out_capabilities_invoke_once_and_shut_down_once(testnet: Testnet, tmp_path: Path) -> None:
    source = tmp_path / "hello.py"
    source.write_text(HELLO)
    owner = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "owner.json")}
    # The holder has no keyring entry for the function: only what the owner handed over.
    holder = {**owner, "BENTO_KEYRING": str(tmp_path / "holder.json")}

    def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bento", *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
        )

    def cli_json(env: dict[str, str], *args: str) -> Any:
        done = cli(env, *args, "--json")
        assert done.returncode == 0, f"bento {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return json.loads(done.stdout)

    deployed = cli_json(owner, "deploy", str(source), "--box", "exit1", "--name", "shared")
    issued = cli_json(owner, "tokens", "shared", "--count", "2")
    first, second = issued["capabilities"]
    assert first.startswith("bento:invoke:") and first != second
    [stop] = cli_json(owner, "tokens", "shared", "--right", "shutdown")["capabilities"]

    used = cli(holder, "invoke", first, "main", '"holder"')
    assert used.returncode == 0, used.stderr
    assert used.stdout == "hello holder\n"
    again = cli(holder, "invoke", first, "main")
    assert again.returncode == 1 and "used already" in again.stderr, again.stderr
    assert cli(holder, "invoke", second, "main").returncode == 0
    assert (
        not (tmp_path / "holder.json").exists()
        or deployed["function_id"] not in (tmp_path / "holder.json").read_text()
    )

    refused = cli(holder, "shutdown", first)  # an invocation right does not shut down
    assert refused.returncode == 1, refused.stderr
    stopped = cli_json(holder, "shutdown", stop)
    assert stopped["function_id"] == deployed["function_id"]
    gone = cli(owner, "invoke", "shared", "main")
    assert gone.returncode == 1 and "shut down" in gone.stderr, gone.stderr
