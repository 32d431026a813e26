"""A saved copy makes no request when it is opened, whatever its page tries: a hostile page
from a real HTTP server is saved as Browser saves it (both engines: the static crawl, and
headless chromium's build), opened from its files in Debian's Chromium, and every request
the browser makes is recorded three ways, and the servers' access logs are read too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from selectolax.lexbor import LexborHTMLParser

from bento.functions.browser import discover, fetch, pack, receive, render
from bento.functions.browser.inert import inert_files
from bento.functions.browser.rewrite import localize
from browser_site import png, serve
from chromium_watch import settle, watching
from hostile_page import HOSTILE, SHEET, finish_hostile, hostile_site

pytestmark = pytest.mark.timeout(180)


def save(fetched: list[fetch.Resource], out: Path) -> Path:
    """The copy as Browser makes it: rewritten and packed at the box, unpacked by the client."""
    page, resources = fetched[0], fetched[1:]
    files, names = localize(page, resources)
    archive = pack.pack(files, pack.index(page, resources, names, time.time(), 0.0, discover.PARSER))
    found = receive.unpack(archive, out)
    return Path(found["main"])


@pytest.mark.parametrize("engine", ["static", "chromium"])
async def test_a_saved_hostile_page_requests_nothing_outside_its_folder(engine: str, tmp_path: Path) -> None:
    first, third = hostile_site()
    out = tmp_path / "copy"
    async with serve(first, third):
        finish_hostile(first, third)
        url, limits = f"{first.origin}/", fetch.Limits(timeout=5, deadline=30)
        if engine == "static":
            fetched = await asyncio.to_thread(fetch.crawl, url, limits)
        else:
            fetched = await asyncio.to_thread(render.render, url, limits, "", {})
        main = save(fetched, out)
        first.requests.clear()  # what the box fetched is done; from here, only the copy is opened
        third.requests.clear()
        async with watching() as (tab, watched):
            await settle(tab, lambda: tab.goto(main.as_uri(), wait_until="load", timeout=30_000))
            kept = await tab.evaluate("document.getElementById('kept')?.naturalWidth ?? 0")
            for link in ("#link", "#script-link"):
                await settle(tab, lambda link=link: tab.click(link, timeout=5_000))
        folder = out.resolve().as_uri() + "/"
        leaks = watched.outside(lambda url: url.startswith(folder))
        assert not leaks, f"requests left the copy: {leaks}"
        assert first.requests == [] and third.requests == [], (first.requests, third.requests)
    assert watched.requests, "the copy itself was opened and watched"
    assert kept == 2  # the page's own image, from the copy: inert is not empty


def test_every_document_of_a_copy_names_only_its_own_files() -> None:
    third = "https://third.example"
    page = HOSTILE.format(first="", third=third, ws="wss://third.example")
    sheet = SHEET.format(first="", third=third)
    files = {"index.html": page.encode(), "resources/s.css": sheet.encode(), "resources/a.png": png(1, 1, 1)}
    made = inert_files(files)
    assert "third.example" not in made["resources/s.css"].decode()
    html = made["index.html"].decode()
    # Read again as a browser reads it: no element, attribute or style names the third party
    # (a title's text may still spell out the markup it was built from, as text).
    tree = LexborHTMLParser(html)
    tags = {node.tag for node in tree.css("*")}
    assert not tags & {"script", "object", "embed", "noscript", "template", "base", "set"}, tags
    values = [v or "" for node in tree.css("*") for k, v in node.attrs.items() if k != "title"]
    assert not [v for v in values if "third.example" in v or "leak-" in v], values
    assert not any(k.startswith("on") for node in tree.css("*") for k in node.attrs)
    assert all("third.example" not in node.text() for node in tree.css("style"))
    assert "<script" not in html and "javascript:" not in html
    assert "srcdoc" not in html and "<object" not in html and "<embed" not in html and "ping=" not in html
    assert html.index("Content-Security-Policy") < html.index("<style")  # the policy binds what follows
    assert "default-src 'none'" in html and html.count("http-equiv") == 1  # the page's own meta are gone
    assert made["resources/a.png"] == files["resources/a.png"]  # an image stays as it was


def test_a_box_cannot_smuggle_a_document_the_copy_would_run() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("https://t.example/")</script></svg>'
    plain = b'<svg xmlns="http://www.w3.org/2000/svg"><rect fill="url(#g)"/></svg>'
    made = inert_files({"resources/a.svg": svg, "resources/b.svg": plain, "resources/c.xml": b"<x/>"})
    assert b"script" not in made["resources/a.svg"]
    assert made["resources/b.svg"] == plain and made["resources/c.xml"] == b""
