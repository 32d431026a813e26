"""Finding what a page needs: the references in its HTML and CSS.

HTML is parsed with selectolax's lexbor engine (a maintained HTML5 parser) when the box
offers it, and otherwise with the standard library's ``html.parser``: inside a sandbox
the function has only the standard library until the operator offers packages. Both
walk the same slots (``_slots``), and both can rewrite what they walk, so discovery and
rewriting never disagree about what a reference is.

CSS has no parser in the standard library; its references are few and regular
(``url(...)`` and ``@import "..."``), so one regular expression finds them.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    # (tag, attribute, kind, value) -> the new value, the same value to keep it, None to drop it
    Visitor = Callable[[str, str, str, str], "str | None"]

try:
    from selectolax.lexbor import LexborHTMLParser
except ImportError:  # the box offers no selectolax: the standard library's parser does it
    LexborHTMLParser = None  # type: ignore[assignment,misc]

PARSER = "selectolax.lexbor" if LexborHTMLParser is not None else "html.parser"

# Kinds of slot. Fetched: RESOURCE (opaque bytes, CSS if served as CSS), STYLESHEET, FRAME
# (an HTML document), SRCSET (several resources), CSS (inline CSS with its own
# references). Not fetched: LINK (navigation, made absolute), BASE, DROP (removed).
RESOURCE, STYLESHEET, FRAME, SRCSET, CSS, LINK, BASE, DROP = (
    "resource", "stylesheet", "frame", "srcset", "css", "link", "base", "drop",
)  # fmt: skip
FETCHED = (RESOURCE, STYLESHEET, FRAME)

_SOURCES = {
    "img": ("src",), "source": ("src",), "script": ("src",), "video": ("src", "poster"),
    "audio": ("src",), "track": ("src",), "embed": ("src",), "object": ("data",),
    "body": ("background",), "table": ("background",), "td": ("background",), "th": ("background",),
    "image": ("href", "xlink:href"), "use": ("href", "xlink:href"), "feimage": ("href", "xlink:href"),
}  # fmt: skip
_FETCHED_RELS = {"icon", "shortcut", "apple-touch-icon", "mask-icon", "preload", "modulepreload"}
# Hints that make a browser connect somewhere before anything is shown: an offline copy drops them.
_NETWORK_RELS = {"preconnect", "dns-prefetch", "prefetch", "prerender"}


def _slots(tag: str, attrs: dict[str, str | None]) -> list[tuple[str, str]]:
    """The attributes of one element that hold references, with their kind."""
    slots = [(attr, kind) for attr, kind in _element_slots(tag, attrs) if attr in attrs]
    if "style" in attrs:
        slots.append(("style", CSS))
    return slots


def _element_slots(tag: str, attrs: dict[str, str | None]) -> list[tuple[str, str]]:
    if tag in ("img", "source"):
        return [("src", RESOURCE), ("srcset", SRCSET)]
    if tag in ("iframe", "frame"):
        return [("src", FRAME)]
    if tag == "input":
        return [("src", RESOURCE)] if (attrs.get("type") or "").lower() == "image" else []
    if tag == "link":
        rels = set((attrs.get("rel") or "").lower().split())
        style = "stylesheet" in rels or (rels & {"preload"} and (attrs.get("as") or "") == "style")
        if style:
            return [("href", STYLESHEET), ("integrity", DROP)]  # the sheet is rewritten: no SRI
        if rels & _FETCHED_RELS:
            return [("href", RESOURCE), ("imagesrcset", SRCSET)]
        return [("href", DROP if rels & _NETWORK_RELS else LINK)]
    if tag in ("a", "area"):
        return [("href", LINK)]
    if tag == "form":
        return [("action", LINK)]
    if tag == "base":
        return [("href", BASE)]
    if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "content-security-policy":
        return [("content", DROP)]  # it would forbid the local copies
    return [(attr, RESOURCE) for attr in _SOURCES.get(tag, ())]


# --- walking HTML ---------------------------------------------------------------------------


def walk_html(text: str, visit: Visitor) -> str:
    """Call ``visit`` on every reference slot in document order; return the HTML with its answers."""
    if LexborHTMLParser is not None:
        return _walk_lexbor(text, visit)
    walker = _Walker(text, visit)
    walker.feed(text)
    walker.close()
    return walker.result()


def _walk_lexbor(text: str, visit: Visitor) -> str:
    tree = LexborHTMLParser(text)
    changed = False
    for node in tree.css("*"):
        tag = node.tag or ""
        if tag == "style":
            css = node.text(deep=True)
            new_css = visit(tag, "", CSS, css)
            if new_css is not None and new_css != css:
                node.inner_html = new_css
                changed = True
        attrs = node.attrs
        for attr, kind in _slots(tag, dict(attrs)):
            value = attrs[attr] or ""
            new = visit(tag, attr, kind, value)
            if new is None:
                del attrs[attr]
            elif new != value:
                attrs[attr] = new
            changed = changed or new != value
    return str(tree.html) if changed else text


class _Walker(HTMLParser):
    """html.parser, recording edits by source offset so untouched bytes stay as they were."""

    def __init__(self, text: str, visit: Visitor) -> None:
        super().__init__(convert_charrefs=False)
        self.text = text
        self.visit = visit
        self.edits: list[tuple[int, int, str]] = []  # (offset, length, replacement)
        self.lines = [0] + [m.end() for m in re.finditer("\n", text)]  # html.parser counts "\n" only
        self.style: list[tuple[int, str]] = []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def _start(self, tag: str, pairs: list[tuple[str, str | None]], closed: bool) -> None:
        raw = self.get_starttag_text() or ""
        attrs: dict[str, str | None] = {}
        for name, value in pairs:
            attrs.setdefault(name, value)  # the first of duplicate attributes wins, as in browsers
        new_attrs = dict(attrs)
        for attr, kind in _slots(tag, attrs):
            value = attrs[attr] or ""
            new = self.visit(tag, attr, kind, value)
            if new is None:
                del new_attrs[attr]
            elif new != value:
                new_attrs[attr] = new
        if new_attrs != attrs:
            self.edits.append((self._offset(), len(raw), _tag(tag, new_attrs, closed)))

    def handle_data(self, data: str) -> None:
        if self.cdata_elem == "style":
            self.style.append((self._offset(), data))

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self.style:
            offset, css = self.style[0][0], "".join(piece for _, piece in self.style)
            self.style = []
            new = self.visit("style", "", CSS, css)
            if new is not None and new != css:
                self.edits.append((offset, len(css), new))

    def result(self) -> str:
        text = self.text
        for offset, length, replacement in sorted(self.edits, reverse=True):
            text = text[:offset] + replacement + text[offset + length :]
        return text


def _tag(tag: str, attrs: dict[str, str | None], closed: bool) -> str:
    from html import escape

    parts = [tag] + [name if value is None else f'{name}="{escape(value)}"' for name, value in attrs.items()]
    return "<" + " ".join(parts) + (" />" if closed else ">")


# --- srcset and CSS ---------------------------------------------------------------------------


def parse_srcset(value: str) -> list[tuple[str, str]]:
    """``srcset`` candidates as (URL, descriptor), after the HTML standard's splitting rules."""
    candidates, position = [], 0
    while position < len(value):
        while position < len(value) and (value[position].isspace() or value[position] == ","):
            position += 1
        start = position
        while position < len(value) and not value[position].isspace():
            position += 1
        url = value[start:position]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = value.find(",", position)
            end = len(value) if end < 0 else end
            descriptor, position = value[position:end].strip(), end
        if url:
            candidates.append((url, descriptor))
    return candidates


def join_srcset(candidates: list[tuple[str, str]]) -> str:
    return ", ".join(f"{url} {descriptor}".strip() for url, descriptor in candidates)


_STRING = r"""(?:"(?P<{0}d>[^"]*)"|'(?P<{0}s>[^']*)')"""
_URL = r"""url\(\s*(?:{0}|(?P<{1}b>[^)'"\s]*))\s*\)"""
_CSS_REF = re.compile(
    r"(?P<import>@import\s+)(?:" + _URL.format(_STRING.format("iu"), "iu") + "|" + _STRING.format("is") + ")"
    "|" + _URL.format(_STRING.format("u"), "u"),
    re.IGNORECASE,
)


def rewrite_css(css: str, visit: Callable[[str, bool], str | None]) -> str:
    """Call ``visit(reference, is_import)`` on each ``url()`` and ``@import``; substitute its answers."""

    def replace(match: re.Match[str]) -> str:
        value = next(v for k, v in match.groupdict().items() if k != "import" and v is not None)
        is_import = match.group("import") is not None
        new = visit(value, is_import)
        if new is None or new == value:
            return match.group(0)
        quoted = '"' + new.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"@import url({quoted})" if is_import else f"url({quoted})"

    return _CSS_REF.sub(replace, css)


def css_references(css: str) -> list[tuple[str, bool]]:
    """Every (reference, is_import) in a style sheet, in order."""
    found: list[tuple[str, bool]] = []
    rewrite_css(css, lambda value, is_import: found.append((value, is_import)))
    return found


# --- URLs -------------------------------------------------------------------------------------


def absolute(reference: str, base: str) -> str | None:
    """The absolute http(s) URL a reference names, without its fragment; None if it names none."""
    reference = reference.strip()
    if not reference or reference.startswith("#"):
        return None
    try:
        url = urljoin(base, reference)
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None  # data:, javascript:, mailto:, file: ... are never fetched
    return parts._replace(fragment="").geturl()


def html_base(text: str, url: str) -> str:
    """The URL references in this document are relative to (its ``<base href>``, if any)."""
    found: list[str] = []

    def visit(tag: str, attr: str, kind: str, value: str) -> str:
        if kind == BASE and not found:
            found.append(value)
        return value

    walk_html(text, visit)
    return (absolute(found[0], url) or url) if found else url


# A script element in a DOM that chromium serialized: its tag names come out lower case,
# and a script's text cannot hold "</script" (that would have ended it), so this matches
# exactly the elements, where on arbitrary markup a regular expression would not.
_SCRIPT = re.compile(r"<script\b([^>]*)>.*?</script>", re.DOTALL)
_SCRIPT_TYPE = re.compile(r"""\btype\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_DATA_TYPES = ("application/ld+json", "application/json")  # data, not code: kept


def without_scripts(serialized: str) -> str:
    """A rendered document (chromium's serialization) without its executable scripts.

    >>> without_scripts('<p>a</p><script src="x.js"></script><script type="application/ld+json">{}</script>')
    '<p>a</p><script type="application/ld+json">{}</script>'
    """

    def keep_data(match: re.Match[str]) -> str:
        kind = _SCRIPT_TYPE.search(match.group(1))
        is_data = kind is not None and kind.group(1).lower() in _DATA_TYPES
        return match.group(0) if is_data else ""

    return _SCRIPT.sub(keep_data, serialized)
