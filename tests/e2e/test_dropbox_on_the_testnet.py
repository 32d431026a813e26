"""Dropbox end to end: deposit on one box with the CLI, fetch with the capability alone; the
capability's fetch right is the only way to the deposit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import TIMEOUT, bento_cli

from bento.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]


async def test_a_deposit_is_fetched_with_its_capability_then_self_destructs(
    testnet: Testnet, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    (tmp_path / "file").write_bytes(data)
    depositor, fetcher = tmp_path / "depositor.json", tmp_path / "fetcher.json"
    code, stdout, stderr = await bento_cli(
        testnet,
        depositor,
        "dropbox",
        "put",
        str(tmp_path / "file"),
        "--box",
        "exit1",
        "--fetches",
        "2",
        "--json",
    )
    assert code == 0, stderr
    receipt = json.loads(stdout)
    capability = receipt["capability"]
    assert receipt["fetches_left"] == 2 and receipt["bytes"] == len(data) and receipt["box"] == "exit1"
    # Someone with nothing but the capability (an empty keyring) fetches it, twice, then never again.
    for n in range(2):
        code, _, stderr = await bento_cli(
            testnet, fetcher, "dropbox", "get", capability, "--out", str(tmp_path / f"{n}")
        )
        assert code == 0, stderr
        assert (tmp_path / f"{n}").read_bytes() == data
    assert not fetcher.exists()
    code, stdout, _ = await bento_cli(testnet, fetcher, "dropbox", "get", capability, "--json")
    assert code == 1 and "no deposit for this id and right" in json.loads(stdout)["error"]["message"]
    # The same Dropbox deployment is reused for the next deposit.
    code, stdout, stderr = await bento_cli(
        testnet,
        depositor,
        "dropbox",
        "put",
        str(tmp_path / "file"),
        "--box",
        "exit1",
        "--expires",
        "1h",
        "--json",
    )
    assert code == 0, stderr
    second = json.loads(stdout)["capability"]
    assert second.split(":")[2] == capability.split(":")[2]
    # A forged fetch right for the same deposit (with a get the narrowed token allows) finds nothing.
    parts = second.split(":")
    forged = ":".join([*parts[:5], "00" * 32, *parts[6:]])
    code, stdout, _ = await bento_cli(testnet, fetcher, "dropbox", "get", forged, "--json")
    assert code == 1 and "no deposit for this id and right" in json.loads(stdout)["error"]["message"]
