"""Browser from the user's side: deploy it (or reuse a deployment), browse, verify, unpack.

The code uploaded is this package's box-side modules, as the package ``bento_browser``;
its deployment is named after a hash of that code, so a keyring entry is reused only
for exactly this code.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, FiniteFloat, model_validator

from bento.client.box import Box
from bento.client.cover import Cover, CoveredLink
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import SessionStream
from bento.errors import BentoError
from bento.functions import deploy
from bento.protocol.manifest import Manifest
from bento.protocol.messages import ResourceUsage
from bento.protocol.policy import Needs, SyscallProfile

from . import pack, saved, timing, wire
from .inert import INERT, Links
from .receive import Progress, receive, unpack

PACKAGE = "bento_browser"
BOX_MODULES = (
    "__init__",
    "wire",
    "pad",
    "discover",
    "rewrite",
    "fetch",
    "render",
    "pack",
    "timing",
    "deposit",
    "function",
)


def code() -> bytes:
    """The uploaded package: the box-side modules, as a reproducible .tar.gz."""
    return deploy.package(Path(__file__).parent, PACKAGE, BOX_MODULES)


def manifest(*, via_dropbox: bool = False, engine: str = "static") -> Manifest:
    """Browser's manifest; ``via_dropbox``: the one that may call other boxes (a Dropbox),
    deployed apart so plain Browser still runs on boxes that allow no such calls; ``engine``
    "chromium": the one that runs a headless chromium, which asks for far more (a box offers
    it only if its policy lists the chromium syscall profile)."""
    chromium = engine == "chromium"
    profiles = [SyscallProfile.COMPUTE, SyscallProfile.NETWORK]
    if chromium:
        profiles += [SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM]
    kind = ("via-" if via_dropbox else "") + ("chromium-" if chromium else "")
    return Manifest(
        name=f"browser-{kind}{deploy.version(code())}",
        module=f"{PACKAGE}.function",
        description="Browser: fetches a page with its resources at the exit, packs and pads it",
        needs=Needs(
            network=True,
            syscall_profiles=profiles,
            # chromium: about 10 processes and 120 threads, 0.3-0.6 GB for a corpus page
            # (bench/browser_engines.py); else the client library, to reach the Dropbox.
            memory_mb=1024 if chromium else 256 if via_dropbox else 192,
            cpu_seconds=120 if chromium else 60,
            wall_seconds=300,
            # Threads count: up to 20 fetching (the concurrency limit's top), the main one and
            # spares; calling a Dropbox adds the client library's.
            processes=256 if chromium else 32 if via_dropbox else 24,
            open_files=256 if chromium else 128,
            scratch_mb=256 if chromium else 16,  # chromium's profile and shared memory
            output_mb=256,
            call_boxes=via_dropbox,
        ),
    )


async def deployment(
    box: Box, keyring: Keyring, *, fresh: bool = False, via_dropbox: bool = False, engine: str = "static"
) -> tuple[Deployment, bool]:
    """Browser on ``box``: the keyring's deployment of this code, else a new one (kept)."""
    wanted = manifest(via_dropbox=via_dropbox, engine=engine)
    return await deploy.ensure(box, keyring, code(), wanted, fresh=fresh)


async def _start(
    box: Box,
    keyring: Keyring,
    entry: str,
    arguments: list[Any],
    *,
    via_dropbox: bool = False,
    cover: Cover | None = None,
    engine: str = "static",
    key: bytes,
    schedule: Timing | None = None,
) -> tuple[SessionStream, Deployment, bool]:
    """Invoke ``entry`` on Browser (deployed or reused) and attach, in one round trip; the page
    comes sealed under ``key`` (``wire``), which travels inside the session only; with
    ``schedule``, in the window of one of its deadlines (``timing``)."""
    if engine not in wire.ENGINES:
        raise BentoError(f"unknown engine {engine!r}", fix=f"use one of: {', '.join(wire.ENGINES)}")
    if engine != "static":
        arguments = [*arguments, engine]  # the entry points' last parameter
    sealed_for: dict[str, Any] = {"seal": wire.encode_key(key)}
    if schedule is not None:
        sealed_for["timing"] = schedule.schedule().request()
    function, deployed = await deployment(box, keyring, via_dropbox=via_dropbox, engine=engine)
    try:
        stream = await box.start(function, entry, arguments, sealed_for, cover=cover)
    except BentoError:
        if deployed:
            raise
        # The box forgot it (shut down, or the box restarted): deploy this code again, once.
        keyring.forget(function.function_id, how="replaced")
        function, deployed = await deployment(
            box, keyring, fresh=True, via_dropbox=via_dropbox, engine=engine
        )
        stream = await box.start(function, entry, arguments, sealed_for, cover=cover)
    keyring.add_session(stream.session_id, function.function_id, function.session_rights[stream.session_id])
    return stream, function, deployed


class Timing(BaseModel):
    """A delivery schedule: the page arrives in the window of one of ``deadlines`` (seconds after
    the request), at ``rate`` bytes/s, padded to fill it, so that when the download starts and
    how long it lasts do not tell the site (``timing``). Browser pads to the window: ask for no
    other padding (``Options.pad`` 0).

    >>> Timing(deadlines=(5, 10, 20, 40), rate=500_000).schedule().size(10)
    2500000
    >>> try:
    ...     Timing(deadlines=(10, 5))
    ... except ValueError as exc:  # pydantic's ValidationError, naming the rule broken
    ...     print(exc.errors()[0]["msg"])
    Value error, the deadlines must increase: 10, 5
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    deadlines: tuple[FiniteFloat, ...] = timing.DEFAULT_DEADLINES
    rate: int = timing.DEFAULT_RATE

    @model_validator(mode="after")
    def _kept_by_browser(self) -> Timing:
        self.schedule()  # the box's own rules (timing.Schedule): a TimingError is a ValueError
        return self

    def schedule(self) -> timing.Schedule:
        return timing.Schedule(tuple(float(d) for d in self.deadlines), self.rate)


@dataclass
class Options:
    pad: int = 0
    scheme: str = "multiple"
    user_agent: str = ""
    cookies: dict[str, str] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    cover: Cover | None = None  # link cover around the whole transfer (bento.client.cover)
    engine: str = "static"  # or "chromium": the page as a headless browser builds it
    timing: Timing | None = None  # deliver at a deadline, at a constant rate (pad must be 0)


@dataclass
class Page:
    url: str
    directory: Path
    main: Path
    index: dict[str, Any]
    archive_bytes: int
    padding_bytes: int
    received_bytes: int
    seconds_to_page: float  # request -> the page verified and unpacked (shown, with on_page)
    seconds_to_page_bytes: float = 0.0  # request -> the archive's last byte arrived
    seconds_to_last_byte: float = 0.0  # request -> the transfer's last byte (the padding's) arrived
    seconds: float = 0.0  # request -> the session's end, as the box reported it
    usage: ResourceUsage | None = None  # the instance's, as the box measured it
    function_id: str = ""
    deployed: bool = False
    cover: dict[str, Any] | None = None  # what the link's cover did (bento.client.cover)
    deadline: float | None = None  # with a delivery schedule: the deadline the page arrived at
    deadlines_missed: int = 0  # earlier deadlines of the schedule it was not ready for (or too big)

    @property
    def resources(self) -> list[dict[str, Any]]:
        return list(self.index.get("resources", []))

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.resources if r.get("error")]

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "final_url": self.index.get("final_url"),
            "directory": str(self.directory),
            "main": str(self.main),
            "archive": pack.ARCHIVE,
            "resources": len(self.resources),
            "resources_failed": [{"url": r.get("url"), "error": r.get("error")} for r in self.failed],
            "archive_bytes": self.archive_bytes,
            "padding_bytes": self.padding_bytes,
            "received_bytes": self.received_bytes,
            "seconds_to_page": round(self.seconds_to_page, 3),
            "seconds_to_page_bytes": round(self.seconds_to_page_bytes, 3),
            "seconds_to_last_byte": round(self.seconds_to_last_byte, 3),
            "seconds": round(self.seconds, 3),
            "box_seconds": self.index.get("seconds"),
            "parser": self.index.get("parser"),
            "engine": self.index.get("engine", "static"),
            "box_usage": self.usage.model_dump() if self.usage else None,
            "function_id": self.function_id,
            "deployed": self.deployed,
            "cover": self.cover,
            "deadline": self.deadline,
            "deadlines_missed": self.deadlines_missed,
        }


async def browse(
    box: Box,
    keyring: Keyring,
    url: str,
    out: Path,
    options: Options | None = None,
    *,
    on_page: Callable[[Path], Awaitable[None]] | None = None,
    progress: Progress | None = None,
) -> Page:
    """Fetch ``url`` through Browser on ``box`` into the directory ``out`` (created; must be empty)."""
    options = options or Options()
    created = _prepare(out)
    try:
        return await _browse(box, keyring, url, out, options, on_page, progress)
    except BaseException:
        if created:
            _discard_if_empty(out)  # a failure leaves nothing behind
        raise


async def _browse(
    box: Box,
    keyring: Keyring,
    url: str,
    out: Path,
    options: Options,
    on_page: Callable[[Path], Awaitable[None]] | None,
    progress: Progress | None,
) -> Page:
    started, key = time.monotonic(), wire.new_key()
    stream, function, deployed = await _start(
        box,
        keyring,
        "browse",
        _arguments(url, options),
        cover=options.cover,
        engine=options.engine,
        key=key,
        schedule=options.timing,
    )
    async with stream:  # with cover, leaving waits for the end of the cover window
        keep = functools.partial(unpack, out=out)
        received = await receive(stream, key, keep, started, on_page, progress)
    received |= _kept(options.timing, received["received_bytes"])
    page = Page(url=url, directory=out, function_id=function.function_id, deployed=deployed, **received)
    if isinstance(stream.link, CoveredLink):
        page.cover = stream.link.report()
    page.seconds = time.monotonic() - started
    return page


async def browse_in_memory(
    box: Box, keyring: Keyring, url: str, options: Options, links: Links = INERT
) -> tuple[saved.SavedCopy, dict[str, Any]]:
    """``url`` through Browser on ``box``, kept in memory (the viewer's): its inert copy (links
    as ``links`` make them), and the transfer's figures (bytes, padding, times)."""
    started, key = time.monotonic(), wire.new_key()
    arguments = _arguments(url, options)
    stream, _, _ = await _start(
        box,
        keyring,
        "browse",
        arguments,
        cover=options.cover,
        engine=options.engine,
        key=key,
        schedule=options.timing,
    )

    def keep(archive: bytes) -> dict[str, Any]:
        return {"copy": saved.read_archive(archive, links)}

    async with stream:
        received = await receive(stream, key, keep, started, None, None)
    received |= _kept(options.timing, received["received_bytes"])
    return received.pop("copy"), received


def _kept(schedule: Timing | None, received: int) -> dict[str, Any]:
    """The deadline a scheduled transfer was delivered at: its length names it, and a length
    that names none is a box that did not keep the schedule (so the page's timing showed)."""
    if schedule is None:
        return {}
    kept = schedule.schedule()
    deadline = kept.deadline_of(received)
    if deadline is None:
        sizes = ", ".join(str(kept.size(d)) for d in kept.deadlines)
        raise BentoError(
            f"the box did not keep the delivery schedule: it sent {received} bytes, not a window's ({sizes})",
            fix="the page arrived, but its timing was not hidden: use another box",
        )
    return {"deadline": deadline, "deadlines_missed": kept.deadlines.index(deadline)}


def _arguments(url: str, options: Options) -> list[Any]:
    if (problem := wire.cookie_problem(options.cookies)) is not None:
        raise BentoError(f"Browser cannot send these cookies: {problem}", fix="give NAME=VALUE cookies")
    if options.timing is not None and (options.pad != 0 or options.scheme != "multiple"):
        raise BentoError(
            "a delivery schedule pads the transfer to fill its window: it takes no other padding",
            fix="ask for pad 0 (bento browse: drop --pad) with a schedule",
        )
    return [url, options.pad, options.scheme, options.user_agent, options.cookies, options.limits]


def _discard_if_empty(out: Path) -> None:
    with contextlib.suppress(OSError):
        if not any(out.iterdir()):
            out.rmdir()


def _prepare(out: Path) -> bool:
    """Make sure ``out`` is an empty directory; True if it was created here."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BentoError(f"{out} exists and is not an empty directory", fix="name a new directory with --out")
    existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BentoError(f"cannot create {out}: {exc.strerror}") from None
    return not existed
