"""The page rewritten to its local copies, so it opens offline from the unpacked archive.

Every reference that was fetched points at its copy under ``resources/``; one that could
not be fetched points at a local name that does not exist, never at the web (an absolute
URL left behind would be fetched by the user's own browser, over her own link: exactly
what Browser is there to avoid). Links a person follows (``<a href>``, forms) become
absolute URLs in the archive, for the viewer to follow through Browser again.

This is the box's side, and the box is not trusted with the user's safety: her client
makes every document inert before anything opens it (``inert``, ``saved``), which drops
scripts, links and whatever reference is not one of the copy's files.

Rewritten documents are UTF-8 with a byte-order mark, which every browser honours before
any ``<meta charset>`` or ``@charset``, so a page that named its encoding only in an
HTTP header still reads right from a file.
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import re
from urllib.parse import urljoin, urlsplit

from . import discover
from .discover import BASE, CSS, DROP, FETCHED, LINK, SRCSET

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .fetch import Resource

RESOURCES = "resources"
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_BOM = "\ufeff"
# Opened from files, a browser knows a resource's type by its suffix alone: the common ones
# are fixed here (the system's MIME table may say ".es" for JavaScript, which none reads).
_SUFFIXES = {
    "text/javascript": ".js", "application/javascript": ".js", "application/x-javascript": ".js",
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "image/avif": ".avif", "image/svg+xml": ".svg", "image/x-icon": ".ico",
    "image/vnd.microsoft.icon": ".ico", "font/woff2": ".woff2", "font/woff": ".woff",
    "font/ttf": ".ttf", "font/otf": ".otf", "application/font-woff": ".woff",
    "application/json": ".json", "video/mp4": ".mp4", "video/webm": ".webm", "audio/mpeg": ".mp3",
}  # fmt: skip


def local_name(resource: Resource) -> str:
    """Where a fetched resource lives in the archive: a hash of its URL, and a suffix for its type."""
    digest = hashlib.sha256(resource.url.encode()).hexdigest()[:20]
    if resource.error:
        return f"{RESOURCES}/missing-{digest}"
    suffix = ""
    if resource.is_css:
        suffix = ".css"
    elif resource.is_html:
        suffix = ".html"
    else:
        mime = resource.content_type.split(";", 1)[0].strip().lower()
        url_suffix = posixpath.splitext(urlsplit(resource.final_url or resource.url).path)[1]
        for guess in (_SUFFIXES.get(mime), url_suffix, mimetypes.guess_extension(mime) if mime else None):
            if guess and _SAFE_SUFFIX.match(guess):
                suffix = guess
                break
    return f"{RESOURCES}/{digest}{suffix}"


def localize(page: Resource, resources: list[Resource]) -> tuple[dict[str, bytes], dict[str, str]]:
    """The archive's files (``index.html`` for the page, ``resources/...``), rewritten, and
    where each URL's copy is (URLs that failed have none)."""
    names = {r.url: local_name(r) for r in resources}
    names[page.url] = "index.html" if page.is_html else "index" + local_name(page).rpartition("/")[2][20:]
    files: dict[str, bytes] = {}
    for resource in [page, *resources]:
        if resource.error:
            continue
        path = names[resource.url]
        if resource.is_html:
            text = rewrite_html(resource.text(), resource.base or resource.final_url, path, names)
            files[path] = (_BOM + text.lstrip(_BOM)).encode()
        elif resource.is_css:
            text = rewrite_stylesheet(resource.text(), resource.final_url, path, names)
            files[path] = (_BOM + text.lstrip(_BOM)).encode()
        else:
            files[path] = resource.body
    return files, {url: path for url, path in names.items() if path in files}


def _local(reference: str, base: str, here: str, names: dict[str, str]) -> str:
    """The local path, relative to the document at ``here``, that replaces ``reference``."""
    url = discover.absolute(reference, base)
    if url is None:
        scheme = reference.strip().split(":", 1)[0].lower() if ":" in reference else ""
        # Fragments, data: and the like stay; any other scheme is nothing the copy may load.
        return reference if scheme in ("", "data", "blob", "about", "javascript") else ""
    target = names.get(url) or f"{RESOURCES}/missing-{hashlib.sha256(url.encode()).hexdigest()[:20]}"
    return posixpath.relpath(target, posixpath.dirname(here) or ".")


def _link(value: str, base: str) -> str:
    """A link a person may follow: absolute, with its fragment; in-page anchors stay as they are."""
    if value.strip().startswith("#"):
        return value
    try:
        url = urljoin(base, value.strip())
    except ValueError:
        return value
    return url if urlsplit(url).scheme in ("http", "https") else value


def rewrite_stylesheet(css: str, base: str, here: str, names: dict[str, str]) -> str:
    return discover.rewrite_css(css, lambda value, _import: _local(value, base, here, names))


def rewrite_html(text: str, base: str, here: str, names: dict[str, str]) -> str:
    def visit(tag: str, attr: str, kind: str, value: str) -> str | None:
        if kind in FETCHED:
            return _local(value, base, here, names)
        if kind == SRCSET:
            candidates = discover.parse_srcset(value)
            return discover.join_srcset([(_local(u, base, here, names), d) for u, d in candidates])
        if kind == CSS:
            return rewrite_stylesheet(value, base, here, names)
        if kind == LINK:
            return _link(value, base)
        if kind in (BASE, DROP):
            return None
        return value

    return discover.walk_html(text, visit)
