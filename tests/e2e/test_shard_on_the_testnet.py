"""Shard end to end: a file spread over three boxes, rebuilt from two while the third's
server is killed in the middle of the transfer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest
from support import TIMEOUT

from bento.client.discovery import discover
from bento.client.keyring import Keyring
from bento.functions.shard import client as shard
from bento.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 4)]


async def _cli(testnet: Testnet, tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    environment = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "k.json"), **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bento", *args, env=environment, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 2 * TIMEOUT)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_put_and_get_with_the_command_and_a_sealed_manifest(testnet: Testnet, tmp_path: Path) -> None:
    data = os.urandom(700_000)
    (tmp_path / "report.bin").write_bytes(data)
    secret = {"BENTO_PASSPHRASE": "a long passphrase"}
    code, stdout, stderr = await _cli(
        testnet, tmp_path, "shard", "put", "report.bin", "--n", "3", "--k", "2", "--passphrase", "--json",
        **secret,
    )  # fmt: skip
    assert code == 0, stderr
    stored = json.loads(stdout)
    assert stored["sealed"] and stored["survives_boxes_lost"] == 1
    assert len({b["box"] for b in stored["boxes"]}) == 3  # three boxes, one shard each
    assert 1.5 <= stored["overhead"] < 1.6
    # The testnet's relays all live on 127.0.0.1: one /16, said plainly.
    assert any("/16" in w for w in stored["warnings"])
    manifest = tmp_path / "report.bin.shard"
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    assert b"bento-dropbox" not in manifest.read_bytes()  # sealed: no capability in clear

    code, stdout, stderr = await _cli(testnet, tmp_path, "shard", "get", str(manifest), "--json")
    assert code == 1 and "sealed with a passphrase" in json.loads(stdout)["error"]["message"]
    code, stdout, stderr = await _cli(
        testnet, tmp_path, "shard", "get", str(manifest), "--out", "back.bin", "--json", **secret
    )
    assert code == 0, stderr
    fetched = json.loads(stdout)
    assert len(fetched["shards_used"]) == 2 and (tmp_path / "back.bin").read_bytes() == data
    assert "a long passphrase" not in stdout + stderr


async def test_get_survives_a_box_killed_mid_way(testnet: Testnet, tmp_path: Path) -> None:
    assert len(testnet.state.boxes) >= 3, "the session's testnet runs three boxes"
    # Shards of 8 MB: more than a box's output buffer and Tor's windows hold, so a box killed
    # when the first bytes of any shard arrive cannot have sent its own whole shard yet.
    data = os.urandom(16_000_000)
    boxes = await asyncio.to_thread(discover, testnet.control_address)
    stored = await shard.put(
        data, name="f", boxes=boxes, n=3, k=2, socks=testnet.socks_address,
        keyring=Keyring(tmp_path / "k.json"),
    )  # fmt: skip
    holders = {r.fingerprint: r.index for r in stored.manifest.shards}
    assert len(holders) == 3
    victim = testnet.state.boxes[-1]  # the last box: the other tests lean on the first ones
    killed: list[str] = []

    def transferring(done: int, _total: int) -> None:
        # N - K = 1: the moment the first bytes of the get arrive, one box dies, no goodbye.
        if done and not killed:
            assert victim.bento_pid is not None
            os.kill(victim.bento_pid, signal.SIGKILL)
            killed.append(victim.nickname)

    try:
        async with asyncio.timeout(2 * TIMEOUT):
            fetched = await shard.get(stored.manifest, socks=testnet.socks_address, progress=transferring)
    finally:
        for nickname in killed:  # for the tests after this one
            await asyncio.to_thread(testnet.restart_box, nickname, 3 * TIMEOUT)  # all 3 attempts, loaded
    assert killed and fetched.data == data
    assert sorted(fetched.used) == sorted(i for f, i in holders.items() if f != victim.fingerprint)
