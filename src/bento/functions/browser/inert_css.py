"""CSS made inert: every reference a style sheet can load is one of the copy's own files, or gone.

CSS loads through more than ``url()``: ``@import "a.css"``, ``image-set("a.png" 1x)``,
``src()``, a string in a custom property that ``image-set(var(--x))`` takes up later, and
each of them can be spelt with escapes (``\\75 rl(``) that a regular expression misses.
So the sheet is read by tinycss2, a tokenizer after the CSS Syntax standard (escapes
undone, comments gone), and rewritten token by token: a reference that is not a file of
the copy becomes ``none`` (an image that is not there; a declaration the browser drops).

>>> place = Place("index.html", frozenset({"index.html", "resources/a.png"}))
>>> inert_stylesheet('b { background: url(resources/a.png), \\\\75 rl(http://t.example/p.gif) }', place)
'b { background: url("resources/a.png"), none }'
>>> inert_stylesheet('@import "https://f.example/f.css"; i { background: image-set("//t.ex" 1x) }', place)
' i { background: image-set(none 1x) }'
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import tinycss2
from tinycss2 import ast

# A URL parser drops these before it reads a URL (tabs and newlines anywhere, spaces at the ends).
_IGNORED = re.compile(r"[\t\n\r]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# Strings that name a place on the web (or a script) wherever they stand: CSS can turn a
# string into a URL late (``image-set(var(--x))``), so none may remain, even in ``content``.
_LIVE = re.compile(
    r"^\s*(?:(?:https?|wss?|ftp|file|javascript|vbscript|data|blob|filesystem):|[/\\]{2})", re.I
)
# Functions whose strings are URLs.
_URL_FUNCTIONS = {"url", "src"}
_IMAGE_FUNCTIONS = {
    "image-set",
    "-webkit-image-set",
    "image",
    "-webkit-image",
    "cross-fade",
    "-webkit-cross-fade",
}


@dataclass(frozen=True)
class Place:
    """A document of the copy (``here``, a path inside it) and the files the copy holds."""

    here: str
    files: frozenset[str]
    _known: dict[tuple[str, bool, tuple[str, ...]], str | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )  # a page names the same few files many times

    def local(self, reference: str, *, data: bool = False, suffixes: tuple[str, ...] = ()) -> str | None:
        """The reference as a path from ``here`` to one of the copy's files (ending in one of
        ``suffixes``, when given), or a fragment of this document, or a ``data:`` URL where
        ``data`` allows it; None for anything else, which the copy must not load.

        >>> place = Place("resources/f.html", frozenset({"resources/a.png", "index.html"}))
        >>> place.local("a.png#x"), place.local("../index.html"), place.local("/etc/passwd")
        ('a.png#x', '../index.html', None)
        >>> place.local("http://127.0.0.1/a.png"), place.local("missing.png"), place.local("#top")
        (None, None, '#top')
        """
        key = (reference, data, suffixes)
        if key not in self._known:
            self._known[key] = self._local(reference, data, suffixes)
        return self._known[key]

    def _local(self, reference: str, data: bool, suffixes: tuple[str, ...]) -> str | None:
        text = _IGNORED.sub("", reference).strip()
        if text.startswith("#"):
            return text
        if text[:5].lower() == "data:":
            return text if data else None
        text = text.replace("\\", "/")  # a browser reads a backslash as a slash in these URLs
        if not text or _SCHEME.match(text) or text.startswith("/"):
            return None
        path, _, fragment = text.partition("#")
        if "?" in path:
            return None  # a file has no query; the copy never names one
        folder = posixpath.dirname(self.here)
        target = posixpath.normpath(posixpath.join(folder, unquote(path)))
        if target not in self.files or (suffixes and not target.endswith(suffixes)):
            return None
        return posixpath.relpath(target, folder or ".") + (
            "#" + quote(fragment, safe="-_.~") if fragment else ""
        )


def inert_stylesheet(css: str, place: Place) -> str:
    """A whole style sheet (a file, or a ``<style>`` element's text), made inert."""
    tokens = tinycss2.parse_component_value_list(css, skip_comments=True)
    return str(tinycss2.serialize(_inert(tokens, place)))


# CSS without any of these has no function, string, URL or escape: nothing that can load.
_PLAIN = re.compile(r"^[^\\()\"'/@<]*$")


def inert_value(css: str, place: Place) -> str:
    """Declarations (a ``style`` attribute) or a value (an SVG ``fill="url(...)"``), made inert.

    >>> inert_value("color: red; width: 2px", Place("index.html", frozenset()))
    'color: red; width: 2px'
    """
    if _PLAIN.match(css):  # most style attributes: read by no tokenizer, for speed
        return css
    return inert_stylesheet(css, place)


def for_style_element(css: str) -> str:
    """CSS as the text of an HTML ``<style>``: its text ends at the first ``</style``, so no
    ``<`` may stand in it (escaped, it is the same character to CSS)."""
    return css.replace("<", "\\3c ")


def _inert(tokens: list[ast.Node], place: Place) -> list[ast.Node]:
    out: list[ast.Node] = []
    skipping_import = False
    for position, token in enumerate(tokens):
        if skipping_import:  # an @import that loads nothing of the copy: dropped up to its ";"
            skipping_import = not (token.type == "literal" and token.value == ";")
            continue
        if token.type == "at-keyword" and token.lower_value == "import":
            imported = _import_target(tokens[position + 1 :])
            if imported is None or place.local(imported, suffixes=(".css",)) is None:
                skipping_import = True
                continue
        out.append(_token(token, place))
    return out


def _import_target(rest: list[ast.Node]) -> str | None:
    for token in rest:
        if token.type == "whitespace":
            continue
        if token.type in ("string", "url"):
            return str(token.value)
        if token.type == "function" and token.lower_name in _URL_FUNCTIONS:
            return _first_string(token.arguments)
        return None
    return None


def _first_string(arguments: list[ast.Node]) -> str | None:
    found = [t for t in arguments if t.type not in ("whitespace", "comment")]
    return str(found[0].value) if len(found) == 1 and found[0].type == "string" else None


def _token(token: ast.Node, place: Place, *, in_image: bool = False) -> ast.Node:
    line, column = token.source_line, token.source_column
    if token.type == "url":
        return _reference(token.value, place, line, column)
    if token.type == "function" and token.lower_name in _URL_FUNCTIONS:
        return _reference(_first_string(token.arguments) or "", place, line, column)
    if token.type == "string":
        if in_image:  # a candidate of image-set() and its kin is a URL, quoted
            return _reference(token.value, place, line, column)
        return ast.StringToken(line, column, "", '""') if _LIVE.match(token.value) else token
    if token.type == "error":
        return ast.WhitespaceToken(line, column, " ")  # a bad url() or string: nothing of it stays
    if token.type == "function":
        image = in_image or token.lower_name in _IMAGE_FUNCTIONS
        arguments = [_token(t, place, in_image=image) for t in token.arguments]
        return ast.FunctionBlock(line, column, token.name, arguments)
    if token.type in ("{} block", "[] block", "() block"):
        block = {"{} block": ast.CurlyBracketsBlock, "[] block": ast.SquareBracketsBlock}
        kind = block.get(token.type, ast.ParenthesesBlock)
        return kind(line, column, _inert(token.content, place))
    return token


def _reference(value: str, place: Place, line: int, column: int) -> ast.Node:
    local = place.local(value, data=True)
    if local is None:
        return ast.IdentToken(line, column, "none")
    return ast.FunctionBlock(line, column, "url", [ast.StringToken(line, column, local, _quoted(local))])


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\a ") + '"'
