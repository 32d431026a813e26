"""The viewer in process: its checks (secret, host, policies) and its page in Debian's Chromium.

Here the box is faked by Browser's own fetching code run locally (crawl, rewrite, pack: what
the function does at the box), so the viewer's page can be driven quickly; the viewer
over a real box of the testnet is tests/e2e/test_browser_viewer.py."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from bento.errors import BentoError
from bento.functions.browser import discover, fetch, pack, saved, viewer
from bento.functions.browser.inert import Links
from bento.functions.browser.rewrite import localize
from browser_site import Server, png, serve
from chromium_watch import navigate, settle, watching
from hostile_page import finish_hostile, hostile_site

pytestmark = pytest.mark.timeout(180)

FIRST = """<!doctype html><html><head><title>first</title>
<script>fetch("{third}/leak-fetch")</script></head><body>
<h1 id="heading">The first page</h1><img id="picture" src="/a.png">
<a id="next" href="/next.html">next</a> <a id="away" href="{third}/other.html">elsewhere</a>
<form id="search" action="/search" method="get"><input name="q"><button id="send">search</button></form>
<form id="post" action="/login" method="post"><input name="user"><button id="post-send">log in</button></form>
</body></html>"""
NEXT = (
    '<!doctype html><html><body><h1 id="heading">The next page</h1><img src="{third}/leak.png"></body></html>'
)
FOUND = '<!doctype html><html><body><h1 id="heading">Search results</h1></body></html>'


def site() -> tuple[Server, Server]:
    first, third = Server("127.0.0.1", "127.0.0.1"), Server("127.0.0.1", "localhost")
    first.files["/a.png"] = (png(1, 2, 3), "image/png")
    return first, third


def finish(first: Server, third: Server) -> None:
    for path, page in (("/", FIRST), ("/next.html", NEXT), ("/search", FOUND)):
        first.files[path] = (page.format(third=third.origin).encode(), "text/html; charset=utf-8")


class LocalBrowser:
    """Browser's fetching, rewriting and packing, run here instead of at a box."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, url: str, cookies: dict[str, str], links: Links) -> tuple[saved.SavedCopy, Any]:
        self.asked.append((url, cookies))
        try:
            fetched = await asyncio.to_thread(
                fetch.crawl, url, fetch.Limits(timeout=5, deadline=20), "", cookies
            )
        except fetch.PageError as exc:
            raise BentoError(f"Browser could not fetch the page: {exc}") from None
        files, names = localize(fetched[0], fetched[1:])
        archive = pack.pack(
            files, pack.index(fetched[0], fetched[1:], names, time.time(), 0.0, discover.PARSER)
        )
        return saved.read_archive(archive, links), {"archive_bytes": len(archive)}


async def test_the_viewer_browses_through_browser_and_the_browser_asks_only_the_viewer() -> None:
    first, third = site()
    local = LocalBrowser()
    async with serve(first, third), viewer.running(local, "a local Browser") as shown:
        finish(first, third)
        async with watching() as (tab, watched):
            await settle(tab, lambda: tab.goto(shown.address, wait_until="load"))
            await tab.fill("input[name=url]", f"{first.origin}/")
            await navigate(tab, lambda: tab.press("input[name=url]", "Enter"))
            page = tab.frame_locator("#page")
            assert await page.locator("#heading").text_content() == "The first page"
            assert await page.locator("#picture").evaluate("i => i.naturalWidth") == 2
            assert tab.url.endswith("/view/1")
            await navigate(
                tab, lambda: page.locator("#next").click()
            )  # a link: the next page through Browser
            assert (
                tab.url.endswith("/view/2")
                and await page.locator("#heading").text_content() == "The next page"
            )
            await navigate(tab, lambda: tab.click("#back"))
            assert (
                tab.url.endswith("/view/1") and await tab.input_value("input[name=url]") == f"{first.origin}/"
            )
            await page.locator("input[name=q]").fill("onion routing")
            await navigate(
                tab, lambda: page.locator("#send").click()
            )  # a GET form: its query through Browser
            assert await page.locator("#heading").text_content() == "Search results"
            await navigate(tab, lambda: tab.click("#back"))
            await page.locator("input[name=user]").fill("alice")
            await navigate(tab, lambda: page.locator("#post-send").click())  # a POST form is not sent
            assert "/refused/1" in tab.url and "was not sent" in (await tab.text_content("#problem") or "")
            await navigate(tab, lambda: tab.click("#back"))
            assert tab.url.endswith("/view/1")
        outside = watched.outside(lambda url: url.startswith(shown.origin + "/"))
        assert not outside, outside
        # The box (here: Browser's code run locally) fetched the next page's image; nobody ran the script.
        assert third.requests == ["/leak.png"], third.requests
    assert [url for url, _ in local.asked] == [
        f"{first.origin}/",
        f"{first.origin}/next.html",
        f"{first.origin}/search?q=onion+routing",
    ]
    assert "/login" not in first.requests


async def test_a_hostile_page_in_the_viewer_asks_nothing_of_anyone_but_the_viewer() -> None:
    first, third = hostile_site()
    async with serve(first, third), viewer.running(LocalBrowser()) as shown:
        finish_hostile(first, third)
        async with watching() as (tab, watched):
            await settle(tab, lambda: tab.goto(shown.address, wait_until="load"))
            await tab.fill("input[name=url]", f"{first.origin}/")
            await navigate(tab, lambda: tab.press("input[name=url]", "Enter"))
            await tab.wait_for_load_state("networkidle")  # what the frame would start, started
            page = tab.frame_locator("#page")
            assert await page.locator("#kept").evaluate("i => i.naturalWidth") == 2
            await settle(tab, lambda: page.locator("#script-link").click(timeout=5_000))  # inert
            landed = tab.url
    # The box (here: Browser's code run locally) fetched what the page names; the browser
    # showing it asked the viewer alone, whatever the page tried.
    outside = watched.outside(lambda url: url.startswith(shown.origin + "/"))
    assert not outside, outside
    assert landed.endswith("/view/1")


async def test_the_viewer_answers_only_its_own_secret_at_its_own_address() -> None:
    async with viewer.running(LocalBrowser()) as shown, httpx.AsyncClient(timeout=10) as client:
        home = await client.get(shown.address)
        assert home.status_code == 200 and "default-src 'none'" in home.headers["content-security-policy"]
        wrong = await client.get(f"{shown.origin}/{'x' * len(shown.secret)}/")
        rebound = await client.get(shown.address, headers={"Host": f"attacker.example:{shown.port}"})
        assert wrong.status_code == rebound.status_code == 404
        assert "secret" not in wrong.text and shown.secret not in wrong.text
        bad = await client.get(shown.address + "go", params={"url": "file:///etc/passwd"})
        assert bad.status_code == 400 and "not an http" in bad.text


async def test_cookies_the_user_allows_go_with_that_site_only() -> None:
    first, third = site()
    local = LocalBrowser()
    async with serve(first, third), viewer.running(local) as shown:
        finish(first, third)
        async with httpx.AsyncClient(timeout=30, follow_redirects=True) as client:
            allowed = await client.post(
                shown.address + "cookies", data={"host": "127.0.0.1", "cookies": "sid=abc; lang=en"}
            )
            assert allowed.status_code == 200
            await client.get(shown.address + "go", params={"url": f"{first.origin}/"})
            await client.get(shown.address + "go", params={"url": f"{third.origin}/nothing"})
            refused = await client.post(
                shown.address + "cookies", data={"host": "127.0.0.1", "cookies": "a b=c"}
            )
            assert refused.status_code == 400 and "not kept" in refused.text
            view = await client.get(shown.address + "view/1")
            assert "sid, lang" in view.text and "abc" not in view.text  # names shown, never values
            history = await client.get(shown.address + "history")
            assert history.text.index(f"{third.origin}/nothing") < history.text.index(f"{first.origin}/")
            assert "not fetched: Browser could not fetch the page" in history.text  # the 404, said
    assert local.asked[0][1] == {"sid": "abc", "lang": "en"} and local.asked[1][1] == {}
    assert re.search(r"sid=abc", first.headers["/"].get("cookie", ""))  # the site got them from Browser


def test_open_says_plainly_that_there_is_no_display_and_fetches_nothing() -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run(
        [sys.executable, "-m", "bento", "browse", "http://127.0.0.1:9/", "--box", "nowhere", "--open"],
        capture_output=True, text=True, timeout=60, env=environment,
    )  # fmt: skip
    assert done.returncode != 0 and "needs a display" in done.stderr and "--serve" in done.stderr
