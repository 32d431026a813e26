"""A saved page made inert: opened in any browser, it requests nothing but its own files.

Browser's point is that nothing on the user's side shows which page she reads; a copy that
ran the page's scripts, or loaded one image from the web, would tell the site (and anyone
on her link) from her own address. So every document of the copy is rewritten here, on
the user's machine, whatever the box sent (a box is not trusted to have done it):

- no script: ``<script>``, inline event handlers (``on*``), ``javascript:`` URLs, and what
  holds plug-ins or documents of its own (``<object>``, ``<embed>``, ``<iframe srcdoc>``);
  ``<noscript>`` and ``<template>`` go too (a browser without scripts, or with declarative
  shadow DOM, would show what they hold, which a parser with scripts on reads as text);
- every reference a browser loads is one of the copy's files (``inert_css.Place.local``),
  else it is dropped: attributes, ``srcset``, inline styles, ``<style>``, style sheets;
- links and forms are inert (or, for the viewer, lead to the viewer: ``Links``); ``ping``,
  ``<base>``, every ``<meta http-equiv>`` (refresh, cookies, a policy of the page's own)
  and hints that connect early (preconnect, dns-prefetch, prefetch, prerender) are gone;
- a Content-Security-Policy first in ``<head>``: ``default-src 'none'`` and only the
  copy's own images, styles, fonts, media and frames, so anything missed above is still
  refused by the browser.

>>> place = Place("index.html", frozenset({"index.html", "resources/a.png"}))
>>> html = inert_html('<img src="resources/a.png" onerror="fetch(1)"><script>x()</script>'
...                   '<a href="https://example.com/next" ping="https://t.example/">next</a>', place)
>>> html[html.index("<body>"):]
'<body><img src="resources/a.png"><a>next</a></body></html>'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from . import discover
from .inert_css import _IGNORED, _LIVE, Place, for_style_element, inert_stylesheet, inert_value

# file: pages: 'self' is the copy's own folder's scheme and host, which for a file is no
# host at all; nothing of the web matches it. (The viewer names its own URL instead.)
FILE_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; "
    "media-src 'self' data:; frame-src 'self'; form-action 'none'; base-uri 'none'"
)
_BOM = "\ufeff"
_ROUNDS = 4
_UNSETTLED = (
    f'<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="{FILE_POLICY}">'
    "</head><body><p>Browser could not make this page safe to open offline.</p></body></html>"
)
# Elements removed with all they hold: scripts, what runs code or documents of its own, and
# what a parser reads differently with scripts on and off.
_REMOVED = (
    "script", "noscript", "template", "object", "embed", "applet", "param", "portal", "fencedframe",
    "base", "meta[http-equiv]", "noframes", "noembed",
    # SVG's animations set attributes, an image's href among them, from values no check reads as URLs.
    "set", "animate", "animateMotion", "animateTransform", "animateColor", "discard",
)  # fmt: skip
# Attributes that make requests or change how references resolve, whatever their value.
_DROPPED = {
    "ping", "attributionsrc", "srcdoc", "integrity", "crossorigin", "nonce", "target", "formtarget",
    "formaction", "formmethod", "formenctype", "xml:base", "http-equiv", "manifest", "codebase",
    "archive", "classid", "profile", "lowsrc", "dynsrc", "longdesc", "cite",
}  # fmt: skip
_IMAGES = {
    "img",
    "source",
    "input",
    "image",
    "feimage",
    "video",
    "audio",
    "track",
    "body",
    "table",
    "td",
    "th",
}
_FRAMES = {"iframe", "frame"}
_ICON_RELS = {"icon", "shortcut", "apple-touch-icon", "apple-touch-icon-precomposed", "mask-icon"}
_HTML_SUFFIXES = (".html", ".htm", ".xhtml", ".xht", ".shtml")
# Opened by themselves these run code or load what they name, and no page of the copy uses them.
_BLANKED_SUFFIXES = (".xml", ".xsl", ".xslt", ".svgz", ".mht", ".mhtml", ".swf")
# An SVG file is kept only if it plainly holds nothing that runs or loads: a reference to
# anything but its own fragments, a script, an event handler, an escape that could hide one.
_SVG_ACTIVE = re.compile(
    rb"<script|<foreignobject|<!entity|<\?xml-stylesheet|\bon[a-z]+\s*=|javascript:|@import|image-set"
    rb"""|(?:href|src)\s*=\s*["'](?!#)|url\(\s*["']?(?!#)|\\|&#""",
    re.IGNORECASE,
)
_EMPTY_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"/>'


def _nothing(_url: str) -> str | None:
    return None


def _same(url: str) -> str | None:
    return url


@dataclass(frozen=True)
class Links:
    """What a link (``follow``) and a GET form (``submit``) of the page become: an address,
    or None to leave them inert; where other forms go (``refuse``); ``target`` for them all;
    the ``policy`` the copy declares."""

    follow: Callable[[str], str | None] = field(default=_nothing)
    submit: Callable[[str], str | None] = field(default=_nothing)
    refuse: str | None = None  # where a form that would POST goes instead (a page that says so)
    target: str | None = None
    policy: str = FILE_POLICY


INERT = Links()  # the saved copy's: nothing leads anywhere


def inert_files(files: dict[str, bytes], links: Links = INERT) -> dict[str, bytes]:
    """Every file of a copy (path -> bytes), its documents made inert; other files as they are."""
    place_files = frozenset(files)
    out: dict[str, bytes] = {}
    for path, data in files.items():
        lower = path.lower()
        if lower.endswith(_HTML_SUFFIXES):
            text = data.decode("utf-8", errors="replace").lstrip(_BOM)
            out[path] = (_BOM + inert_html(text, Place(path, place_files), links)).encode()
        elif lower.endswith(".css"):
            text = data.decode("utf-8", errors="replace").lstrip(_BOM)
            out[path] = (_BOM + inert_stylesheet(text, Place(path, place_files))).encode()
        elif lower.endswith(".svg"):
            out[path] = _EMPTY_SVG if _SVG_ACTIVE.search(data) else data
        elif lower.endswith(_BLANKED_SUFFIXES):
            out[path] = b""
        else:
            out[path] = data
    return out


def inert_html(text: str, place: Place, links: Links = INERT) -> str:
    """One HTML document of the copy, at ``place``, made inert.

    The browser reads what is written here, not the tree that was checked: the result is
    read and made inert again until nothing changes (markup built to parse one way and
    serialize into another, "mutation XSS", does not survive that); a page that never
    settles is replaced by a notice.
    """
    # Until it settles, links stay the absolute URLs they are; only then do they become
    # what ``links`` says (the viewer's own addresses, which a round would take for foreign).
    settling = Links(_same, _same, None, links.target, links.policy)
    for _ in range(_ROUNDS):
        made = _inert_once(text, place, settling)
        if made == text:
            return _inert_once(made, place, links)
        text = made
    return _UNSETTLED


def _inert_once(text: str, place: Place, links: Links) -> str:
    tree = LexborHTMLParser(text)
    for selector in _REMOVED:
        while (node := tree.css_first(selector)) is not None:
            node.decompose()
    unwanted: list[LexborNode] = []
    for node in tree.css("*"):
        tag = (node.tag or "").lower()
        if tag == "style":
            _restyle(node, place)
        if (tag == "link" and not _keep_link(node, place)) or (
            tag == "meta" and (node.attrs.get("name") or "").lower() == "referrer"  # ours is added
        ):
            unwanted.append(node)
            continue
        attrs = node.attrs
        original = {name.lower(): value or "" for name, value in attrs.items()}
        if tag == "form":
            _form(node, original, links)
        for name in list(attrs.keys()):
            new = _attribute(tag, name.lower(), attrs[name] or "", original, place, links)
            if new is None:
                del attrs[name]
            elif new != attrs[name]:
                attrs[name] = new
    for node in unwanted:
        node.decompose()
    _declare(tree, links)
    return str(tree.html)


def _restyle(node: LexborNode, place: Place) -> None:
    css = for_style_element(inert_stylesheet(node.text(deep=True), place))
    for child in list(node.iter(include_text=True)):
        child.decompose()
    node.insert_child(css)


def _keep_link(node: LexborNode, place: Place) -> bool:
    """A ``<link>`` stays only as a style sheet or an icon of the copy; preconnect, prefetch,
    preload (but of a style sheet, which a script would have applied), manifest... go."""
    attrs = node.attrs
    rels = set((attrs.get("rel") or "").lower().split())
    if "preload" in rels and (attrs.get("as") or "").lower() == "style":
        rels = {"stylesheet"}
    if "stylesheet" in rels:
        local = place.local(attrs.get("href") or "", suffixes=(".css",))
        kept = "stylesheet"
    elif rels and rels <= _ICON_RELS:
        local = place.local(attrs.get("href") or "", data=True)
        kept = " ".join(sorted(rels))
    else:
        return False
    if local is None:
        return False
    for name in list(attrs.keys()):
        if name.lower() not in ("media", "title", "type", "sizes"):
            del attrs[name]
    attrs["rel"] = kept
    attrs["href"] = local
    return True


def _form(node: LexborNode, original: dict[str, str], links: Links) -> None:
    """A form that would send anything but a GET to its own action (a POST, or a form with no
    action, which sends to the page's own address) is refused: sent, it goes to ``refuse``."""
    if (original.get("method") or "get").lower() == "get" and "action" in original:
        return
    if "method" in node.attrs:
        del node.attrs["method"]
    original.pop("action", None)
    if "action" in node.attrs:
        del node.attrs["action"]
    if links.refuse is not None:
        node.attrs["action"] = links.refuse


def _attribute(
    tag: str, name: str, value: str, original: dict[str, str], place: Place, links: Links
) -> str | None:
    """The attribute's new value, or None to remove it."""
    if name.startswith("on") or name in _DROPPED:
        return None
    if name == "style":
        return inert_value(value, place)
    if tag == "link":
        return value  # decided whole by _keep_link
    if name in ("href", "xlink:href") and tag in ("a", "area"):
        return _link(value, links.follow, place)
    if tag == "form" and name == "action":
        if "action" not in original:
            return value  # the refusal _form put there
        return _link(value, links.submit, place)
    if name in ("srcset", "imagesrcset"):
        candidates = [(place.local(u, data=True), d) for u, d in discover.parse_srcset(value)]
        kept = [(u, d) for u, d in candidates if u is not None]
        return discover.join_srcset(kept) if kept else None
    if name in ("src", "href", "xlink:href", "poster", "background", "data", "action", "icon"):
        if tag in _FRAMES:
            return place.local(value, suffixes=(".html",))
        if tag == "use":
            return place.local(value, suffixes=(".svg",))
        return place.local(value, data=tag in _IMAGES)
    if name == "usemap":
        return value if value.strip().startswith("#") else None
    if "url(" in value.lower() or "image-set" in value.lower():
        return inert_value(value, place)  # SVG's presentation attributes are CSS: fill="url(...)"
    return None if _LIVE.match(value) else value


def _link(value: str, lead: Callable[[str], str | None], place: Place) -> str | None:
    if value.strip().startswith("#"):
        return value.strip()
    try:  # the box made every link absolute
        parts = urlsplit(_IGNORED.sub("", value).strip())
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and parts.hostname:
        return lead(parts.geturl())
    return place.local(value, suffixes=_HTML_SUFFIXES)


def _declare(tree: LexborHTMLParser, links: Links) -> None:
    """The policy first in ``<head>`` (a policy binds only what comes after it), and the
    links' target."""
    head = tree.head
    if head is None:
        return
    extra = f'<base target="{links.target}">' if links.target else ""
    declared = LexborHTMLParser(
        f'<meta http-equiv="Content-Security-Policy" content="{links.policy}">'
        f'<meta name="referrer" content="no-referrer">{extra}'
    ).head
    assert declared is not None
    first = head.child
    for node in declared.iter():
        if first is None:
            head.insert_child(node)
        else:
            first.insert_before(node)
