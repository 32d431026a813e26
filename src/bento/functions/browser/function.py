"""Browser's entry points on the box: ``browse(url, pad=..., scheme=...)``, and
``browse_to_dropbox``, which deposits the same bytes with a Dropbox on another box.

It fetches the page with everything it needs, rewrites it to its local copies, packs it,
seals it under the key the client sent (``wire``: a Dropbox that carries it can neither read
nor alter it), and streams it to the client: a fixed header, the archive, and then padding
up to the size the scheme gives, so the user's link shows one small upload, a
pause, and one download whose length says little about the page. The session's result
is ``None``: anything sized by the page after the padding would undo it.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from bento.runtime import api

from . import discover, fetch, pack, pad, wire
from .rewrite import localize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_BLOCK = 64 << 20  # the largest padding block a client may ask for
_CHUNK = 1 << 20


class BrowseError(Exception):
    """Browser could not deliver the page; the message says why."""


def browse(
    url: str,
    pad_bytes: int = 0,
    scheme: str = "multiple",
    user_agent: str = "",
    cookies: dict[str, str] | None = None,
    limits: dict[str, Any] | None = None,
    engine: str = "static",
    seal: str = "",
) -> None:
    """Fetch ``url`` and everything it needs; send header, archive, padding, sealed under ``seal``."""
    key = _check(url, pad_bytes, scheme, user_agent, cookies, engine, seal)
    page, padding = _page(url, pad_bytes, scheme, user_agent, cookies, limits, engine, key)
    api.send(page)
    stream = wire.Padding(key)
    while padding > 0:  # after the page: the client shows it while these bytes still arrive
        count = min(padding, _CHUNK)
        api.send(stream.take(count))
        padding -= count


def browse_to_dropbox(
    url: str,
    pad_bytes: int = 0,
    scheme: str = "multiple",
    user_agent: str = "",
    cookies: dict[str, str] | None = None,
    limits: dict[str, Any] | None = None,
    dropbox: str = "",
    fetches: int = 1,
    seconds: float = 86400,
    engine: str = "static",
    seal: str = "",
) -> dict[str, Any]:
    """Reserve a deposit with a Dropbox on the box ``dropbox`` (an onion address), send the
    receipt (one JSON line), then fetch and deposit the same bytes ``browse`` would send.

    The client may go away once it has the receipt; a failure to fetch is deposited as
    the reason, so the user learns it from the Dropbox. The page is sealed under ``seal``,
    the key only the user holds: the Dropbox can neither read nor replace it."""
    key = _check(url, pad_bytes, scheme, user_agent, cookies, engine, seal)
    if not isinstance(dropbox, str) or not dropbox:
        raise BrowseError("name the Dropbox's box by its onion address")
    from . import deposit  # the box's `bento` package: only this entry point needs it

    place = deposit.reserve(dropbox, fetches, seconds)
    api.send(json.dumps(place.receipt()).encode() + b"\n")
    try:
        page, padding = _page(url, pad_bytes, scheme, user_agent, cookies, limits, engine, key)
    except BrowseError as exc:
        deposit.fill(place, b"", error=f"Browser could not fetch the page: {exc}")
        raise
    deposit.fill(place, page + wire.Padding(key).take(padding))
    return {"deposited": True}  # no size: whoever attaches learns nothing the padding hides


def _page(
    url: str,
    pad_bytes: int,
    scheme: str,
    user_agent: str,
    cookies: dict[str, str] | None,
    limits: dict[str, Any] | None,
    engine: str,
    key: bytes,
) -> tuple[bytes, int]:
    """The sealed header and archive of ``url`` with everything it needs; the padding's length."""
    options = fetch.Limits(**_limits(limits or {}))
    started, fetched_at = time.monotonic(), time.time()
    try:
        if engine == "chromium":
            # Imported here: asyncio alone would add ~30 ms to every static instance's start.
            from . import render

            try:
                fetched = render.render(url, options, user_agent, cookies or {})
            except render.RenderError as exc:
                raise BrowseError(f"the chromium engine failed: {exc}") from None
        else:
            fetched = fetch.crawl(url, options, user_agent, cookies or {})
    except fetch.PageError as exc:
        raise BrowseError(str(exc)) from None
    page, resources = fetched[0], fetched[1:]
    files, names = localize(page, resources)
    seconds = time.monotonic() - started
    archive = pack.pack(
        files, pack.index(page, resources, names, fetched_at, seconds, discover.PARSER, engine)
    )
    sent = wire.SEALED_HEADER + len(archive) + wire.TAG
    padding = pad.padded_size(sent, scheme, pad_bytes) - sent
    return wire.seal(key, archive, padding), padding


def _check(
    url: Any, pad_bytes: Any, scheme: Any, user_agent: Any, cookies: Any, engine: Any, seal: Any
) -> bytes:
    """The checked request's key; raises :class:`BrowseError` for anything wrong in it."""
    try:
        key = wire.decode_key(seal)
        wire.Padding(key)  # the box offers functions `cryptography`
    except wire.WireError as exc:
        raise BrowseError(f"Browser seals the page for its user, under the key sent as seal: {exc}") from None
    except ImportError:
        raise BrowseError(
            "this box offers functions no `cryptography`: Browser cannot seal the page"
        ) from None
    if engine not in wire.ENGINES:
        raise BrowseError(f"unknown engine {engine!r} (known: {', '.join(wire.ENGINES)})")
    if (
        not isinstance(url, str)
        or urlsplit(url).scheme not in ("http", "https")
        or not urlsplit(url).hostname
    ):
        raise BrowseError(f"{url!r} is not an http:// or https:// URL")
    if not isinstance(pad_bytes, int) or not 0 <= pad_bytes <= MAX_BLOCK:
        raise BrowseError(f"the padding block must be 0 to {MAX_BLOCK} bytes, not {pad_bytes!r}")
    if scheme not in pad.SCHEMES:
        raise BrowseError(f"unknown padding scheme {scheme!r} (known: {', '.join(pad.SCHEMES)})")
    if not isinstance(user_agent, str) or len(user_agent) > 512 or not user_agent.isprintable():
        raise BrowseError("the user agent must be a printable string of at most 512 characters")
    if cookies is not None and (problem := wire.cookie_problem(cookies)) is not None:
        raise BrowseError(problem)
    return key


_LIMITS = {  # name: (type, lowest, highest)
    "timeout": (float, 1.0, 120.0),
    "deadline": (float, 1.0, 600.0),
    "concurrency": (int, 1, 20),
    "per_host": (int, 1, 20),
    "max_bytes": (int, 1 << 10, 128 << 20),
    "max_resources": (int, 0, 2000),
    "max_depth": (int, 0, 8),
}


def _limits(given: dict[str, Any]) -> dict[str, Any]:
    checked = {}
    for name, value in given.items():
        if name not in _LIMITS:
            raise BrowseError(f"unknown limit {name!r} (known: {', '.join(_LIMITS)})")
        kind, low, high = _LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise BrowseError(f"the limit {name} must be a number from {low} to {high}, not {value!r}")
        checked[name] = kind(value)
    return checked
