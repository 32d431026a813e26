"""Browser end to end: a real page from real HTTP servers, fetched by Browser on a box of
the testnet over Tor, unpacked, and opened in Debian's Chromium with the network cut."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chromium import open_offline
from support import TIMEOUT, bento_cli

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.browser import client as browser
from bento.functions.browser import pad, wire
from bento.testnet import Node, Testnet
from browser_site import Server, finish, sample_site, serve

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]


async def test_browse_fetches_the_page_and_chromium_opens_it_offline(
    testnet: Testnet, tmp_path: Path
) -> None:
    first, third = sample_site()
    out, keyring = tmp_path / "page", tmp_path / "keyring.json"
    async with serve(first, third):
        finish(first, third)
        code, stdout, stderr = await bento_cli(
            testnet, keyring, "browse", f"{first.origin}/", "--box", "exit0", "--pad", "64KiB",
            "--out", str(out), "--json",
        )  # fmt: skip
        assert code == 0, stderr
        report = json.loads(stdout)
        # Again: the deployment in the keyring is reused, and Padmé sizes the transfer.
        code, stdout, stderr = await bento_cli(
            testnet, keyring, "browse", f"{first.origin}/", "--box", "exit0", "--pad-scheme", "padme",
            "--out", str(tmp_path / "again"), "--json",
        )  # fmt: skip
        assert code == 0, stderr
        again = json.loads(stdout)
    assert report["parser"] == "selectolax.lexbor"  # the testnet's boxes offer it to functions
    assert report["deployed"] and not again["deployed"] and again["function_id"] == report["function_id"]

    # Every file of the site was fetched at the box (the 404 too), the link never followed.
    assert set(first.requests) >= set(first.files) | {"/old.png", "/missing.png"}
    assert set(third.requests) == set(third.files)
    assert "/elsewhere.html" not in first.requests
    assert [r["url"] for r in report["resources_failed"]] == [f"{first.origin}/missing.png"]
    # Besides the page: every file, but /img/new.png is /old.png's redirect target; and the 404.
    assert report["resources"] == (len(first.files) - 2) + len(third.files) + 2

    # The transfer: header, archive, padding to the next multiple of 64 KiB (Padmé the second time).
    sent = wire.SEALED_HEADER + report["archive_bytes"] + wire.TAG  # sealed for the user
    assert report["received_bytes"] == pad.to_multiple(sent, 64 << 10) == sent + report["padding_bytes"]
    assert report["received_bytes"] % (64 << 10) == 0 and report["padding_bytes"] > 0
    assert again["received_bytes"] == pad.padme(wire.SEALED_HEADER + again["archive_bytes"] + wire.TAG)
    assert (out / "page.tar.gz").stat().st_size == report["archive_bytes"]

    requests, leaks, failed, state = await open_offline(Path(report["main"]))
    assert not leaks, f"requests left the browser: {leaks}"
    local = {Path(url.removeprefix("file://")) for url in requests}
    assert all(path.is_relative_to(out) for path in local), local
    assert all(path.exists() for path in local) and not failed  # the 404's reference is dropped
    archived = {p for p in (out / "resources").iterdir()}
    # What a 1x screen loads: all but the 2x srcset candidate, which was fetched for 2x screens,
    # and the script, which the copy does not run (it would run outside Tor).
    by_path = {r["path"]: r["url"] for r in json.loads((out / "bento-page.json").read_text())["resources"]}
    unused = sorted(by_path[str(p.relative_to(out))] for p in archived - local)
    assert unused == [f"{first.origin}/img/a2.png", f"{third.origin}/lib.js"], unused
    assert state["script"] is None
    assert all(width == 2 for name, width in state["images"] if name != "gone"), state
    assert state["frame_image"] == 2
    assert any(url.endswith(".woff2") for url in requests)  # the web font, from the archive


async def _browse(box: Box, keyring: Keyring, url: str, out: Path, **limits: Any) -> browser.Page:
    return await browser.browse(box, keyring, url, out, browser.Options(pad=0, limits=limits))


async def test_browse_errors_are_clear(box: Box, box_node: Node, tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    site = Server("127.0.0.1", "127.0.0.1", files={"/big": (b"x" * 5000, "text/html")})
    async with serve(site):
        cases = {
            # The testnet's nameserver answers for the box: NXDOMAIN, and nothing leaves the machine.
            "http://no-such-site.test/": "the name no-such-site.test does not resolve",
            "http://192.0.2.1/": "may not connect to 192.0.2.1: the relay's exit policy does not allow",
            f"{site.origin}/nothing": "HTTP 404",
            f"http://127.0.0.1:{box_node.control_port}/": "one of this box's own services",
        }
        for number, (url, expected) in enumerate(cases.items()):
            with pytest.raises(BentoError) as caught:
                await _browse(box, keyring, url, tmp_path / f"out{number}")
            assert "Browser could not fetch the page" in caught.value.message
            assert not (tmp_path / f"out{number}").exists()  # nothing is left behind
            assert expected in caught.value.message, caught.value.message
        with pytest.raises(BentoError) as caught:
            await _browse(box, keyring, f"{site.origin}/big", tmp_path / "big", max_bytes=4096)
        assert "over the limit of 4096 bytes" in caught.value.message
        page = await _browse(box, keyring, f"{site.origin}/big", tmp_path / "fits")
    assert (
        page.padding_bytes == 0 and page.received_bytes == wire.SEALED_HEADER + page.archive_bytes + wire.TAG
    )
    assert (
        b"<body>" + b"x" * 5000 + b"</body>" in (tmp_path / "fits" / "index.html").read_bytes()
    )  # inert: the same
    with pytest.raises(BentoError, match="not an empty directory"):
        await _browse(box, keyring, f"{site.origin}/big", tmp_path / "fits")
