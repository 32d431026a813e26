"""Browser's fetching, rewriting and packing, against real HTTP servers on loopback (no sandbox:
the broker's part is tested end to end in tests/e2e/test_browser.py)."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile

import pytest

from bento.functions.browser import fetch, pack
from bento.functions.browser.rewrite import localize
from browser_site import Server, finish, sample_site, serve


async def crawl(url: str, **limits: object) -> list[fetch.Resource]:
    return await asyncio.to_thread(fetch.crawl, url, fetch.Limits(**limits))  # type: ignore[arg-type]


async def test_a_page_with_every_kind_of_reference_is_fetched_and_packed() -> None:
    first, third = sample_site()
    async with serve(first, third):
        finish(first, third)
        found = await crawl(f"{first.origin}/", concurrency=3)
    page, resources = found[0], found[1:]
    by_url = {r.url: r for r in resources}
    assert page.status == 200 and page.is_html
    assert by_url[f"{first.origin}/old.png"].final_url == f"{first.origin}/img/new.png"  # the redirect
    assert by_url[f"{first.origin}/missing.png"].error == "HTTP 404 Not Found"
    assert by_url[f"{third.origin}/font.woff2"].kind == "resource"  # from site.css's @font-face
    assert by_url[f"{first.origin}/css/imported.css"].kind == "stylesheet"  # @import in <style>
    assert f"{first.origin}/img/frame-bg.png" in by_url  # frame -> its style sheet -> its image
    assert f"{first.origin}/elsewhere.html" not in by_url  # a link is not a resource
    assert [r.url for r in resources if r.error] == [f"{first.origin}/missing.png"]

    files, names = localize(page, resources)
    archive = pack.pack(files, pack.index(page, resources, names, 0, 1.0, "test"))
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    index = json.loads(members.pop(pack.INDEX))
    assert set(members) == set(files) and index["main"] == "index.html"
    html = members["index.html"].decode("utf-8-sig")
    assert first.origin not in html.replace(f'href="{first.origin}/elsewhere.html"', "")
    assert third.origin not in html
    css = members[names[f"{first.origin}/css/site.css"]].decode("utf-8-sig")
    font = names[f"{third.origin}/font.woff2"]
    assert f'url("{font.removeprefix("resources/")}")' in css  # relative to the sheet's own directory


async def test_page_errors_say_what_went_wrong() -> None:
    site = Server("127.0.0.1", "127.0.0.1", files={"/big": (b"x" * 5000, "text/html")})
    async with serve(site):
        with pytest.raises(fetch.PageError, match="HTTP 404"):
            await crawl(f"{site.origin}/nothing")
        with pytest.raises(fetch.PageError, match="over the limit of 4096 bytes"):
            await crawl(f"{site.origin}/big", max_bytes=4096)
        with pytest.raises(fetch.PageError, match="does not resolve"):
            await crawl("http://-no-such-host.invalid/")  # refused by glibc itself: no DNS query
    with pytest.raises(fetch.PageError, match="refused the connection"):
        await crawl(f"{site.origin}/")  # the server is gone now


async def test_limits_on_resources_are_reported_not_fatal() -> None:
    images = "".join(f'<img src="/i{n}.png">' for n in range(5))
    files = {"/": (images.encode(), "text/html")} | {f"/i{n}.png": (b"png", "image/png") for n in range(5)}
    site = Server("127.0.0.1", "127.0.0.1", files=files)
    async with serve(site):
        found = await crawl(f"{site.origin}/", max_resources=3)
    errors = [r.error for r in found if r.error]
    assert len(found) == 6 and errors == ["not fetched: the page has more than 3 resources"] * 2


def test_explain() -> None:
    assert fetch.explain(PermissionError("Bento broker: the relay's exit policy does not allow 1.2.3.4:80"),
                         "http://1.2.3.4/", 5) == (
        "the box may not connect to 1.2.3.4: the relay's exit policy does not allow 1.2.3.4:80"
    )  # fmt: skip
    assert fetch.explain(
        OSError("gaierror: [Errno -2] Name or service not known"), "http://n.example/", 5
    ) == ("the name n.example does not resolve (at the exit)")
    assert (
        fetch.explain(OSError("TimeoutError: "), "http://n.example/", 5)
        == "n.example did not answer within 5 s"
    )


async def test_concurrency_timeouts_cookies_and_user_agent() -> None:
    images = "".join(f'<img src="/i{n}.png">' for n in range(9)) + '<img src="http://localhost:{port}/t.png">'
    site = Server("127.0.0.1", "127.0.0.1")
    third = Server("127.0.0.1", "localhost", files={"/t.png": (b"t", "image/png")})
    site.files = {f"/i{n}.png": (b"png", "image/png") for n in range(9)}
    site.delays = {f"/i{n}.png": 0.3 for n in range(8)} | {"/i8.png": 3.0}
    async with serve(site, third):
        site.files["/"] = (images.replace("{port}", str(third.port)).encode(), "text/html")
        found = await asyncio.to_thread(
            fetch.crawl,
            f"{site.origin}/",
            fetch.Limits(concurrency=3, timeout=2.0),
            "TestAgent/1",
            {"sid": "42"},
        )
    assert 2 <= site.most_in_flight <= 3  # never more than the bound at once
    slow = next(r for r in found if r.url.endswith("/i8.png"))
    assert slow.error == "127.0.0.1 did not answer within 2 s"
    assert sum(1 for r in found if not r.error) == 10
    assert site.headers["/"]["user-agent"] == "TestAgent/1" and site.headers["/"]["cookie"] == "sid=42"
    assert site.headers["/i0.png"]["cookie"] == "sid=42"
    assert "cookie" not in third.headers["/t.png"]  # the user's cookies stay with the page's host
    assert third.headers["/t.png"]["user-agent"] == "TestAgent/1"


async def test_each_host_gets_at_most_per_host_requests_while_others_proceed() -> None:
    # A browser's manners: no server is asked for more than per_host at once, and a busy
    # host does not hold up the requests to another.
    site = Server("127.0.0.1", "127.0.0.1")
    third = Server("127.0.0.1", "localhost")
    site.files = {f"/i{n}.png": (b"png", "image/png") for n in range(8)}
    third.files = {f"/t{n}.png": (b"t", "image/png") for n in range(4)}
    site.delays = {f"/i{n}.png": 0.3 for n in range(8)}
    third.delays = {f"/t{n}.png": 0.3 for n in range(4)}
    async with serve(site, third):
        images = "".join(f'<img src="/i{n}.png">' for n in range(8))
        images += "".join(f'<img src="{third.origin}/t{n}.png">' for n in range(4))
        site.files["/"] = (images.encode(), "text/html")
        found = await crawl(f"{site.origin}/", concurrency=6, per_host=2)
    assert sum(1 for r in found if not r.error) == 13
    assert site.most_in_flight == 2 and third.most_in_flight == 2


async def test_content_codings_are_decoded_and_bounded() -> None:
    import gzip
    import zlib

    page = b"<p>compressed</p>" * 10
    bomb = gzip.compress(b"\0" * (2 << 20))  # 2 MiB from about 2 KiB
    site = Server("127.0.0.1", "127.0.0.1")
    async with serve(site):
        site.encodings = {"/": "gzip"}
        site.files["/"] = (gzip.compress(page), "text/html")
        assert (await crawl(f"{site.origin}/"))[0].body == page
        site.encodings = {"/": "deflate"}
        site.files["/"] = (zlib.compress(page), "text/html")
        assert (await crawl(f"{site.origin}/"))[0].body == page
        site.encodings = {"/": "gzip"}
        site.files["/"] = (bomb, "text/html")
        with pytest.raises(fetch.PageError, match=r"over the limit of 1048576 bytes for the page \(decoded"):
            await crawl(f"{site.origin}/", max_bytes=1 << 20)
        site.encodings = {"/": "br"}
        with pytest.raises(fetch.PageError, match="content coding 'br'"):
            await crawl(f"{site.origin}/")


async def test_compressed_resources_are_charged_their_decoded_size() -> None:
    """Forty small gzip bodies that each inflate to 1 MiB, on a page with a 4 MiB budget: the
    page holds at most 4 MiB of bodies, and the rest fail as over the limit, not by memory."""
    import gzip
    import tracemalloc

    budget, count = 4 << 20, 40
    bomb = gzip.compress(bytes(1 << 20))
    page = "".join(f'<img src="/b{n}.png">' for n in range(count)).encode()
    files = {"/": (page, "text/html")} | {f"/b{n}.png": (bomb, "image/png") for n in range(count)}
    site = Server("127.0.0.1", "127.0.0.1", files=files)
    site.encodings = {f"/b{n}.png": "gzip" for n in range(count)}
    async with serve(site):
        tracemalloc.start()
        try:
            found = await crawl(f"{site.origin}/", max_bytes=budget, concurrency=16)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    held = sum(len(r.body) for r in found)
    refused = [r for r in found if r.error]
    assert held <= budget, f"the page held {held} bytes of bodies on a budget of {budget}"
    assert len(found) == count + 1 and len(refused) >= count - 4, [r.error for r in found]
    assert all(r.error == f"over the limit of {budget} bytes for the page (decoded)" for r in refused)
    assert peak < 3 * budget, f"{peak} bytes were allocated at once"
