"""Browser's discovery and rewriting, with selectolax and with the standard library's parser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bento.functions.browser import discover
from bento.functions.browser.discover import CSS, FRAME, RESOURCE, SRCSET, STYLESHEET
from bento.functions.browser.rewrite import rewrite_html

PAGE = """<!doctype html><html><head><base href="/sub/">
<link rel=stylesheet href="a.css" integrity="sha384-x"><link rel="icon" href="/favicon.ico">
<link rel=preconnect href="https://cdn.example"><link rel=canonical href="page.html">
<meta http-equiv="Content-Security-Policy" content="default-src 'self'">
<style>body { background: url('bg.png') } @import "imp.css";</style>
<script src="//third.example/lib.js"></script></head>
<body style="background: url(b.png)" background="old.gif">
<img src="i.png" srcset="i1.png 1x, i2.png 2x"><picture><source srcset="w.webp"></picture>
<IMG SRC="upper.png"/><iframe src=f.html></iframe><video poster="p.jpg" src="v.mp4"></video>
<input type=image src="btn.png"><input type=text src="not-fetched.png">
<svg><image href="s.svg"/></svg><object data="o.pdf"></object>
<a href="other.html#x">x</a><img src="data:image/png;base64,AAAA"><img src="#frag"><img src="javascript:x">
</body></html>"""


@pytest.fixture(params=["selectolax", "html.parser"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "html.parser":
        monkeypatch.setattr(discover, "LexborHTMLParser", None)
    elif discover.LexborHTMLParser is None:
        pytest.skip("selectolax is not installed")
    yield request.param


def slots(html: str) -> list[tuple[str, str, str, str]]:
    seen: list[tuple[str, str, str, str]] = []

    def visit(tag: str, attr: str, kind: str, value: str) -> str:
        seen.append((tag, attr, kind, value))
        return value

    assert discover.walk_html(html, visit) == html  # nothing changed: the text is untouched
    return seen


def test_every_kind_of_reference_is_found(parser: str) -> None:
    found = {(tag, attr, kind, value) for tag, attr, kind, value in slots(PAGE)}
    for expected in [
        ("link", "href", STYLESHEET, "a.css"),
        ("link", "href", RESOURCE, "/favicon.ico"),
        ("style", "", CSS, "body { background: url('bg.png') } @import \"imp.css\";"),
        ("script", "src", RESOURCE, "//third.example/lib.js"),
        ("body", "style", CSS, "background: url(b.png)"),
        ("body", "background", RESOURCE, "old.gif"),
        ("img", "srcset", SRCSET, "i1.png 1x, i2.png 2x"),
        ("source", "srcset", SRCSET, "w.webp"),
        ("img", "src", RESOURCE, "upper.png"),
        ("iframe", "src", FRAME, "f.html"),
        ("video", "poster", RESOURCE, "p.jpg"),
        ("video", "src", RESOURCE, "v.mp4"),
        ("input", "src", RESOURCE, "btn.png"),
        ("image", "href", RESOURCE, "s.svg"),
        ("object", "data", RESOURCE, "o.pdf"),
    ]:
        assert expected in found, expected
    assert not any(value == "not-fetched.png" for *_, value in found)
    assert discover.html_base(PAGE, "http://h.example/dir/page.html") == "http://h.example/sub/"


def test_both_parsers_find_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    if discover.LexborHTMLParser is None:
        pytest.skip("selectolax is not installed")
    with_lexbor = slots(PAGE)
    monkeypatch.setattr(discover, "LexborHTMLParser", None)
    assert slots(PAGE) == with_lexbor


def test_rewrite_points_at_local_copies_and_nothing_at_the_web(parser: str) -> None:
    base = "http://h.example/sub/"
    names = {f"{base}a.css": "resources/a.css", f"{base}i1.png": "resources/i1.png"}
    out = rewrite_html(PAGE, base, "index.html", names)
    assert 'href="resources/a.css"' in out and "integrity" not in out
    assert "resources/i1.png 1x, resources/missing-" in out  # i2.png was not fetched: a local name
    assert "cdn.example" not in out and "third.example" not in out  # no web address is left to load
    assert "Content-Security-Policy" in out and "default-src" not in out
    assert 'href="http://h.example/sub/other.html#x"' in out  # a link to follow stays on the web
    assert 'href="http://h.example/sub/page.html"' in out
    assert "<base" not in out or 'href="/sub/"' not in out
    assert "data:image/png;base64,AAAA" in out and 'src="#frag"' in out
    assert "javascript:x" in out  # not a fetch; nothing to rewrite
    # In a frame or style sheet under resources/, names are relative to that directory.
    nested = rewrite_html('<img src="i1.png">', base, "resources/f.html", names)
    assert 'src="i1.png"' in nested


def test_srcset_and_css_parsing() -> None:
    assert discover.parse_srcset("a.png 1x, b.png 2x,c.png, data:x,y 3x") == [
        ("a.png", "1x"), ("b.png", "2x"), ("c.png", ""), ("data:x,y", "3x"),
    ]  # fmt: skip
    css = "@import url(a.css); @import 'b.css' screen; x{background:url( \"c.png\" )} y{src:url(d.woff2)}"
    assert discover.css_references(css) == [
        ("a.css", True),
        ("b.css", True),
        ("c.png", False),
        ("d.woff2", False),
    ]
    rewritten = discover.rewrite_css(css, lambda value, _: f"L/{value}")
    assert rewritten.startswith('@import url("L/a.css"); @import url("L/b.css") screen;')
    assert 'url("L/c.png")' in rewritten and 'url("L/d.woff2")' in rewritten


def test_absolute() -> None:
    assert discover.absolute("x.png#f", "http://h/a/") == "http://h/a/x.png"
    assert discover.absolute("//o.example/y", "https://h/") == "https://o.example/y"
    for reference in (
        "",
        "#top",
        "data:,x",
        "javascript:void(0)",
        "mailto:a@b",
        "file:///etc/passwd",
        "ftp://h/x",
    ):
        assert discover.absolute(reference, "http://h/") is None, reference
