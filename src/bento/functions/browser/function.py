"""Browser's entry points on the box: ``browse(url, pad=..., scheme=..., timing=...)``, and
``browse_to_dropbox``, which deposits the same bytes with a Dropbox on another box.

It fetches the page with everything it needs, rewrites it to its local copies, packs it,
seals it under the key the client sent (``wire``: a Dropbox that carries it can neither read
nor alter it), and streams it to the client: a fixed header, the archive, and then padding
up to the size the scheme gives, so the user's link shows one small upload, a
pause, and one download whose length says little about the page. The session's result
is ``None``: anything sized by the page after the padding would undo it. With a delivery
schedule (``timing``) the download's start and length say little about the page either: it
runs in the window of a deadline the user chose, at a constant rate, padded to fill it.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from bento.runtime import api

from . import discover, fetch, pack, pad, timing, wire
from .rewrite import localize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
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
    timing: dict[str, Any] | None = None,
) -> None:
    """Fetch ``url`` and everything it needs; send header, archive, padding, sealed under ``seal``;
    with ``timing`` (a :class:`timing.Schedule`'s request), in the window of a deadline."""
    requested = time.monotonic()  # the schedule's deadlines count from here
    key = _check(url, pad_bytes, scheme, user_agent, cookies, engine, seal)
    if timing is not None:
        schedule = _schedule(timing, pad_bytes, scheme)
        _browse_on_schedule(requested, schedule, url, user_agent, cookies, limits, engine, key)
        return
    page, padding = _page(url, _padded(pad_bytes, scheme), user_agent, cookies, limits, engine, key)
    api.send(page)
    stream = wire.Padding(key)
    while padding > 0:  # after the page: the client shows it while these bytes still arrive
        count = min(padding, _CHUNK)
        api.send(stream.take(count))
        padding -= count


def _browse_on_schedule(
    requested: float,
    schedule: timing.Schedule,
    url: str,
    user_agent: str,
    cookies: dict[str, str] | None,
    limits: dict[str, Any] | None,
    engine: str,
    key: bytes,
) -> None:
    """The page in the window of the first deadline it is ready for and fits in, at the
    schedule's rate, padded to fill the window; a failure is told at a deadline too."""
    # The crawl stops by the last window's start: what is not fetched by then is listed as such.
    last_start = schedule.window(schedule.deadlines[-1])[0]
    crawl = _limits(limits or {})
    crawl["deadline"] = max(1.0, min(crawl.get("deadline", fetch.Limits.deadline), last_start - 0.5))
    chosen: list[float | None] = []

    def window_size(sent: int) -> int:  # the header announces the padding: choose before sealing
        chosen.append(schedule.choose(time.monotonic() - requested, sent))
        return sent if chosen[0] is None else schedule.size(chosen[0])

    try:
        page, _ = _page(url, window_size, user_agent, cookies, crawl, engine, key)
    except BrowseError:
        _sleep_until(requested + schedule.next_end(time.monotonic() - requested))
        raise
    ready, deadline = time.monotonic() - requested, chosen[0]
    if deadline is None:
        _sleep_until(requested + schedule.deadlines[-1])
        raise BrowseError(
            f"the page ({len(page)} bytes, ready after {ready:.1f} s) fits no window of the schedule "
            f"(the last, {schedule.deadlines[-1]:g} s, begins at {last_start:g} s and carries "
            f"{schedule.size(schedule.deadlines[-1])} bytes): ask for a later deadline or a higher rate"
        )
    start, end = schedule.window(deadline)
    stream, sent = wire.Padding(key), 0
    for at, count in timing.pace(schedule.size(deadline), requested + start, requested + end):
        _sleep_until(at)
        piece = page[sent : sent + count]  # the page first, then padding (as without a schedule)
        api.send(piece + stream.take(count - len(piece)))
        sent += count


def _padded(pad_bytes: int, scheme: str) -> Callable[[int], int]:
    return lambda sent: pad.padded_size(sent, scheme, pad_bytes)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _schedule(given: Any, pad_bytes: Any, scheme: Any) -> timing.Schedule:
    try:
        schedule = timing.Schedule.parse(given)
    except timing.TimingError as exc:
        raise BrowseError(f"Browser cannot keep this delivery schedule: {exc}") from None
    if pad_bytes != 0 or scheme != "multiple":
        raise BrowseError(
            "a delivery schedule pads the transfer to fill its deadline's window: ask for no other padding"
        )
    return schedule


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
        page, padding = _page(url, _padded(pad_bytes, scheme), user_agent, cookies, limits, engine, key)
    except BrowseError as exc:
        deposit.fill(place, b"", error=f"Browser could not fetch the page: {exc}")
        raise
    deposit.fill(place, page + wire.Padding(key).take(padding))
    return {"deposited": True}  # no size: whoever attaches learns nothing the padding hides


def _page(
    url: str,
    padded_size: Callable[[int], int],
    user_agent: str,
    cookies: dict[str, str] | None,
    limits: dict[str, Any] | None,
    engine: str,
    key: bytes,
) -> tuple[bytes, int]:
    """The sealed header and archive of ``url`` with everything it needs; the padding's length,
    up to ``padded_size`` of the sealed page's."""
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
    padding = padded_size(sent) - sent
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
