"""The viewer end to end: ``bento browse --serve`` on the testnet, driven in Debian's Chromium.

An address typed into its bar, a link followed, back: each page is one Browser fetch at a
box of the testnet over Tor, and the browser asks nothing of anyone but the viewer."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from support import TIMEOUT

from bento.testnet import Testnet
from browser_site import Server, png, serve
from chromium_watch import navigate, settle, watching

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]

FIRST = """<!doctype html><html><head><title>first</title>
<script>fetch("{third}/leak-fetch"); new Image().src = "{third}/leak-image";</script></head><body>
<h1 id="heading">The first page</h1><img id="picture" src="/a.png" onload="fetch('{third}/leak-onload')">
<a id="next" href="/next.html">next</a></body></html>"""
NEXT = '<!doctype html><html><body><h1 id="heading">The next page</h1></body></html>'


async def test_the_viewer_browses_through_browser_on_a_box(testnet: Testnet, tmp_path: Path) -> None:
    first, third = Server("127.0.0.1", "127.0.0.1"), Server("127.0.0.1", "localhost")
    first.files["/a.png"] = (png(1, 2, 3), "image/png")
    env = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "keyring.json")}
    async with serve(first, third):
        first.files["/"] = (FIRST.format(third=third.origin).encode(), "text/html")
        first.files["/next.html"] = (NEXT.encode(), "text/html")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bento", "browse", "--serve", "--box", "exit0", "--pad", "64KiB",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            address = await asyncio.wait_for(_address(process), TIMEOUT)
            origin = re.match(r"http://127\.0\.0\.1:\d+", address)
            assert origin is not None, address
            async with watching() as (tab, watched):
                await settle(tab, lambda: tab.goto(address, wait_until="load"))
                await tab.fill("input[name=url]", f"{first.origin}/")
                await navigate(tab, lambda: tab.press("input[name=url]", "Enter"), timeout=TIMEOUT)
                page = tab.frame_locator("#page")
                assert await page.locator("#heading").text_content() == "The first page"
                assert await page.locator("#picture").evaluate("i => i.naturalWidth") == 2
                await navigate(tab, lambda: page.locator("#next").click(), timeout=TIMEOUT)
                assert await page.locator("#heading").text_content() == "The next page"
                await navigate(tab, lambda: tab.click("#back"))
                assert (
                    tab.url.endswith("/view/1")
                    and await page.locator("#heading").text_content() == "The first page"
                )
                about = await tab.text_content(".about") or ""
        finally:
            process.send_signal(signal.SIGINT)  # Ctrl-C: the viewer stops, the box's session ends
            _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        assert process.returncode == 0, stderr.decode()
    leaks = watched.outside(lambda url: url.startswith(origin.group(0) + "/"))
    assert not leaks, leaks
    assert watched.requests and third.requests == []  # the page's scripts never ran, anywhere
    assert first.requests.count("/") == 1 and first.requests.count("/next.html") == 1  # back: from memory
    assert "Browser on exit0, padded to a multiple of 65,536 bytes" in about and "of padding" in about


async def _address(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    while line := (await process.stderr.readline()).decode():
        if line.startswith("viewer: "):
            return line.removeprefix("viewer: ").strip()
    raise AssertionError("the viewer never said where it is")
