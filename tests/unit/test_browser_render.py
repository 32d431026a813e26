"""Browser's chromium engine against real HTTP servers on loopback: Debian's chromium, driven
by Playwright, every request answered by Browser's fetcher (no sandbox here: the sandboxed
engine is tested end to end in tests/e2e/test_browser_corpus.py)."""

from __future__ import annotations

import asyncio

import pytest

from bento.functions.browser import fetch, render
from browser_site import Server, finish, sample_site, serve

pytestmark = pytest.mark.timeout(120)

SCRIPTED = b"""<p id="made">not yet</p>
<script>
fetch("/api/data.json").then(r => r.json())
  .then(d => { document.getElementById("made").textContent = "n=" + d.n; });
fetch("/api/send", {method: "POST", body: "x"}).catch(() => {});
</script>
</body>"""


def scripted_site() -> tuple[Server, Server]:
    first, third = sample_site()
    first.files["/api/data.json"] = (b'{"n": 7}', "application/json")
    return first, third


async def rendered(url: str, **limits: object) -> list[fetch.Resource]:
    options = fetch.Limits(**limits)  # type: ignore[arg-type]
    return await asyncio.to_thread(render.render, url, options, "", {})


async def test_the_page_is_kept_as_its_scripts_built_it_with_everything_it_asked_for() -> None:
    first, third = scripted_site()
    async with serve(first, third):
        finish(first, third)
        body, kind = first.files["/"]
        first.files["/"] = (body.replace(b"</body>", SCRIPTED), kind)
        found = await rendered(f"{first.origin}/")
    page, resources = found[0], found[1:]
    by_url = {r.url: r for r in resources}
    html = page.text()
    assert page.url == f"{first.origin}/" and page.is_html
    assert '<p id="made">n=7</p>' in html  # what the script made is in the page
    assert 'data-script="ran"' in html  # the third party's script ran too
    assert "<script" not in html  # and no script is left to run again offline
    assert by_url[f"{first.origin}/api/data.json"].body == b'{"n": 7}'  # a request no markup names
    assert "/api/send" not in first.requests  # a script's POST is refused, never sent
    assert by_url[f"{first.origin}/old.png"].final_url == f"{first.origin}/img/new.png"  # the redirect
    assert by_url[f"{first.origin}/missing.png"].error == "HTTP 404 Not Found"
    assert f"{first.origin}/img/frame-bg.png" in by_url  # frame -> its style sheet -> its image
    assert f"{first.origin}/img/a2.png" in by_url  # a srcset candidate chromium did not need
    frame = by_url[f"{first.origin}/frame.html"]
    assert frame.is_html and 'id="in-frame"' in frame.text()
    assert f"{first.origin}/elsewhere.html" not in by_url  # a link is not a resource


async def test_limits_hold_and_what_was_not_fetched_is_listed() -> None:
    first, third = scripted_site()
    async with serve(first, third):
        finish(first, third)
        found = await rendered(f"{first.origin}/", max_resources=3)
    skipped = [r for r in found[1:] if r.error.startswith("not fetched: the page has more than 3")]
    assert skipped and len([r for r in found[1:] if not r.error]) <= 3


async def test_a_page_that_cannot_be_fetched_says_why() -> None:
    first, third = scripted_site()
    async with serve(first, third):
        finish(first, third)
        with pytest.raises(fetch.PageError, match="HTTP 404"):
            await rendered(f"{first.origin}/nowhere.html")
