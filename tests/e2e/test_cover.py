"""Cover end to end on the testnet: link cover around Browser, and its refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import pytest
from httpx_ws import aconnect_ws
from support import TIMEOUT, deploy

from bento.client.box import Box
from bento.client.cover import Cover
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError
from bento.functions.browser import client as browser
from bento.functions.cover import client as circuit_cover
from bento.protocol.cover import HEADER
from bento.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]


def _tree(directory: Path) -> dict[str, bytes]:
    """The unpacked page, less what records times (the index, and the archive that holds it)."""
    skip = {"bento-page.json", "page.tar.gz"}
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in skip
    }


async def test_link_cover_around_browser_gives_the_same_page_at_a_steady_rate(
    testnet: Testnet, box: Box, tmp_path: Path
) -> None:
    assert testnet.corpus is not None and testnet.corpus_port is not None
    url = testnet.corpus.sites[0].url(testnet.corpus_port)
    keyring = Keyring(tmp_path / "keyring.json")
    async with asyncio.timeout(TIMEOUT):
        plain = await browser.browse(box, keyring, url, tmp_path / "plain", browser.Options(pad=0))
        cover = Cover(rate=400, burst=4, lead=1.0, duration=6.0, tail=1.0)
        options = browser.Options(pad=0, cover=cover)
        covered = await browser.browse(box, keyring, url, tmp_path / "covered", options)
    assert _tree(covered.directory) == _tree(plain.directory) and len(_tree(plain.directory)) > 1
    report = covered.cover
    assert report is not None and report["rate"] == 400 and report["burst"] == 4
    # The window lasted its duration at least, and frames went (and came) at the rate all along.
    assert report["seconds"] >= 6.0
    expected = report["seconds"] * 400 / 4
    assert 0.9 * expected <= report["frames"] <= expected + 1
    assert report["frames_in"] >= 0.85 * expected  # the box's, less those in flight at the close
    assert report["skipped"] <= 0.05 * expected
    assert report["real_in"] > covered.received_bytes  # the page came inside the frames
    assert report["junk_bytes"] > 0


async def test_browse_cover_on_the_command_line(testnet: Testnet, tmp_path: Path) -> None:
    assert testnet.corpus is not None and testnet.corpus_port is not None
    url = testnet.corpus.sites[1].url(testnet.corpus_port)
    env = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "keyring.json")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bento", "browse", url, "--box", "exit0", "--pad", "0",
        "--cover", "150KB/s", "--cover-window", "4", "--out", str(tmp_path / "page"), "--json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert report["cover"]["rate"] == 292 and report["cover"]["burst"] == 2  # 150 KB/s of 514-byte cells
    assert report["cover"]["seconds"] >= 4.0


async def test_an_absurd_cover_rate_is_refused_clearly_by_client_and_box(testnet: Testnet, box: Box) -> None:
    function = await deploy(box, "def main():\n    return 1\n", "cover-refusal")
    with pytest.raises(BentoError, match="covers at most 2000 cells/s"):
        await box.start(function, "main", cover=Cover(rate=10**7))
    # A client that does not check: the box refuses it before a frame is sent, and invokes nothing.
    header = {HEADER: base64.urlsafe_b64encode(json.dumps({"rate": 10**7}).encode()).decode()}
    path = f"/v1/functions/{function.function_id}/invoke"
    headers = {"Authorization": f"Bearer {function.invocation_token}", **header}
    async with asyncio.timeout(TIMEOUT), aconnect_ws(path, box._http, headers=headers) as ws:
        refusal = json.loads(await ws.receive_text())
    assert refusal["code"] == "cover-refused"
    assert "10000000 cells/s is over this box's limit of 2000" in refusal["error"]
    assert (await box.sessions(function)).sessions == []
    await box.shutdown(function)


async def test_circuit_cover_builds_circuits_and_its_sink_gets_every_byte(
    testnet: Testnet, box: Box, tmp_path: Path
) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    ticks: list[tuple[float, int]] = []
    async with asyncio.timeout(TIMEOUT):
        result = await circuit_cover.circuits(
            box, keyring, 3, 40, 4.0, progress=lambda seconds, sent: ticks.append((seconds, sent))
        )
    assert len(result["circuits"]) == 3 and result["seconds"] >= 4.0
    for circuit in result["circuits"]:
        assert len(circuit["path"]) == 3
        assert circuit["bytes_sent"] >= 0.9 * 40 * 4.0 * 498  # 40 cells/s of 498 stream bytes
        assert circuit["bytes_received"] == circuit["bytes_sent"]  # all of it reached the sink
    assert len({tuple(c["path"]) for c in result["circuits"]}) >= 2  # circuits of their own
    assert ticks and ticks[-1][1] <= result["bytes_sent"]
    info = (await box.sessions(await _deployment(keyring, box))).sessions[-1]
    assert info.usage.circuits == 3


async def _deployment(keyring: Keyring, box: Box) -> Deployment:
    return next(d for d in keyring.functions.values() if d.name.startswith("cover-") and d.onion == box.onion)


async def test_circuit_cover_refuses_a_third_party_sink_and_absurd_rates(
    testnet: Testnet, box: Box, tmp_path: Path
) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(BentoError, match="never to '127.0.0.1:80'"):
            await circuit_cover.circuits(box, keyring, 1, 10, 1.0, sink="127.0.0.1:80")
        with pytest.raises(BentoError, match="rate: 1 to 1000 cells per second"):
            await circuit_cover.circuits(box, keyring, 1, 10**6, 1.0)
    sessions = (await box.sessions(await _deployment(keyring, box))).sessions
    assert all(s.usage.circuits == 0 and s.usage.network_granted == 0 for s in sessions)


async def test_cover_circuits_on_the_command_line(testnet: Testnet, tmp_path: Path) -> None:
    env = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "keyring.json")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bento", "cover", "circuits", "--box", "exit0", "--circuits", "2",
        "--rate", "30", "--duration", "2", "--json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert len(report["circuits"]) == 2 and report["bytes_received"] == report["bytes_sent"] > 0
