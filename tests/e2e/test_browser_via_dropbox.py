"""The poster's figure 2 on the testnet: Browser on exit0 fetches a page into a Dropbox on
exit1 while the user is gone; later, with a fresh connection and nothing but the
capability, she fetches it from exit1, and it is the page a direct browse brings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support import TIMEOUT, bento_cli, drain

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.dropbox import client as dropbox
from bento.protocol.messages import SessionState
from bento.testnet import Testnet
from browser_site import Gate, finish, sample_site, serve

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 4)]


def _files(directory: Path) -> dict[str, bytes]:
    """The unpacked page: every file but the index (it holds times) and the archive itself."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file() and p.name not in ("bento-page.json", "page.tar.gz")
    }


async def test_the_page_is_deposited_while_the_client_is_gone_and_fetched_later(
    testnet: Testnet, tmp_path: Path
) -> None:
    first, third = sample_site()
    gate = third.gates["/logo.png"] = Gate()  # Browser is held mid-page until we open it
    keyring, fetcher = tmp_path / "keyring.json", tmp_path / "fetcher.json"
    async with serve(first, third):
        finish(first, third)
        url = f"{first.origin}/"
        # The client asks, takes the capability and exits: its connection is gone with it.
        code, stdout, stderr = await bento_cli(
            testnet, keyring, "browse", url, "--box", "exit0", "--via-dropbox", "exit1",
            "--pad", "64KiB", "--timeout", "120", "--json",  # the held response must not time out
        )  # fmt: skip
        assert code == 0, stdout + stderr
        receipt = json.loads(stdout)
        capability = receipt["capability"]
        assert capability.startswith(f"bento-dropbox:{testnet.state.boxes[1].bento_onion}:")
        assert capability not in stderr  # shown once, on standard output

        held = Keyring(keyring)
        browser = held.functions[receipt["function_id"]]
        assert held.functions[receipt["dropbox_function_id"]].shutdown_token  # hers to shut down
        async with asyncio.timeout(TIMEOUT):
            await gate.arrived.wait()  # the box is fetching the page's resources now
        async with Box(browser.onion, socks=testnet.socks_address) as box:
            for _ in range(100):  # the box notices the closed stream soon after the exit
                info = await box.session(browser, receipt["session_id"])
                if not info.attached:
                    break
                await asyncio.sleep(0.2)
            assert info.state is SessionState.RUNNING and not info.attached
            # Too early: the Dropbox says so, and the try costs none of the deposit's fetches.
            dropbox_box = Box(testnet.state.boxes[1].bento_onion or "", socks=testnet.socks_address)
            async with dropbox_box, asyncio.timeout(TIMEOUT):
                with pytest.raises(BentoError, match="still at work"):
                    await dropbox.get(dropbox_box, dropbox.Capability.parse(capability))
            assert (await box.session(browser, receipt["session_id"])).state is SessionState.RUNNING
            gate.opened.set()
            async with asyncio.timeout(TIMEOUT):
                output, ended = await drain(box, browser, receipt["session_id"])
        assert ended.state is SessionState.COMPLETED and ended.result == {"deposited": True}, ended.error
        assert output == b""  # the client took the receipt before it left; no page byte came here

        code, stdout, stderr = await bento_cli(  # no key: refused before the one fetch is spent
            testnet, fetcher, "dropbox", "get", capability, "--page", str(tmp_path / "x"), "--json"
        )
        assert code != 0 and "needs the page's key" in stdout, stdout + stderr
        key = ["--page-key", receipt["page_key"]]
        code, stdout, stderr = await bento_cli(
            testnet, fetcher, "dropbox", "get", capability, "--page", str(tmp_path / "later"), *key, "--json"
        )
        assert code == 0, stdout + stderr
        later = json.loads(stdout)
        code, stdout, stderr = await bento_cli(
            testnet, keyring, "browse", url, "--box", "exit0", "--pad", "64KiB",
            "--out", str(tmp_path / "direct"), "--json",
        )  # fmt: skip
        assert code == 0, stdout + stderr
        direct = json.loads(stdout)
    assert later["bytes"] % (64 << 10) == 0 and later["padding_bytes"] > 0  # deposited padded
    assert later["resources"] == direct["resources"]
    assert _files(tmp_path / "later") == _files(tmp_path / "direct")
    assert len(_files(tmp_path / "direct")) > 10
    # Fetched its one allowed time: gone.
    code, stdout, _ = await bento_cli(testnet, fetcher, "dropbox", "get", capability, "--json")
    assert code != 0 and "no deposit for this id and right" in json.loads(stdout)["error"]["message"]
