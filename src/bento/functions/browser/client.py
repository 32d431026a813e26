"""Browser from the user's side: deploy it (or reuse a deployment), browse, verify, unpack.

The code uploaded is this package's box-side modules, as the package ``bento_browser``;
its deployment is named after a hash of that code, so a keyring entry is reused only
for exactly this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bento.client.box import Box
from bento.client.cover import Cover, CoveredLink
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import SessionStream
from bento.errors import BentoError
from bento.functions import deploy
from bento.protocol.manifest import Manifest
from bento.protocol.messages import ResourceUsage, SessionState
from bento.protocol.policy import Needs, SyscallProfile

from . import pack, saved, wire
from .inert import INERT, Links

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
    "deposit",
    "function",
)
MAX_ARCHIVE = 256 << 20  # the most a client accepts from a box before refusing the transfer
Progress = Callable[[int, int | None], None]  # (bytes received, bytes expected once known)


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
) -> tuple[SessionStream, Deployment, bool]:
    """Invoke ``entry`` on Browser (deployed or reused) and attach, in one round trip; the page
    comes sealed under ``key`` (``wire``), which travels inside the session only."""
    if engine not in wire.ENGINES:
        raise BentoError(f"unknown engine {engine!r}", fix=f"use one of: {', '.join(wire.ENGINES)}")
    if engine != "static":
        arguments = [*arguments, engine]  # the entry points' last parameter
    sealed_for = {"seal": wire.encode_key(key)}
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


@dataclass
class Options:
    pad: int = 0
    scheme: str = "multiple"
    user_agent: str = ""
    cookies: dict[str, str] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    cover: Cover | None = None  # link cover around the whole transfer (bento.client.cover)
    engine: str = "static"  # or "chromium": the page as a headless browser builds it


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
        box, keyring, "browse", _arguments(url, options), cover=options.cover, engine=options.engine, key=key
    )
    async with stream:  # with cover, leaving waits for the end of the cover window
        keep = functools.partial(_unpack, out=out)
        received = await _receive(stream, key, keep, started, on_page, progress)
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
        box, keyring, "browse", arguments, cover=options.cover, engine=options.engine, key=key
    )

    def keep(archive: bytes) -> dict[str, Any]:
        return {"copy": saved.read_archive(archive, links)}

    async with stream:
        received = await _receive(stream, key, keep, started, None, None)
    return received.pop("copy"), received


def _arguments(url: str, options: Options) -> list[Any]:
    if (problem := wire.cookie_problem(options.cookies)) is not None:
        raise BentoError(f"Browser cannot send these cookies: {problem}", fix="give NAME=VALUE cookies")
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


Keep = Callable[[bytes], dict[str, Any]]  # the opened archive -> what was kept of it


async def _receive(
    stream: SessionStream,
    key: bytes,
    keep: Keep,
    started: float,
    on_page: Callable[[Path], Awaitable[None]] | None,
    progress: Progress | None,
) -> dict[str, Any]:
    """Header, archive (opened under ``key``, unpacked, shown), then exactly the announced
    padding, each byte of it checked (``wire``).

    The page is verified and unpacked in a task of its own while the padding keeps
    arriving: a reader that stopped to unpack would leave the padding waiting in Tor's
    windows and only then take it, so the padding would end later by the unpacking time.
    """
    buffer = bytearray()
    header: tuple[int, int] | None = None
    expected_padding = wire.Padding(key)
    showing: asyncio.Task[dict[str, Any]] | None = None  # ours: awaited or cancelled below
    times = {"seconds_to_page_bytes": 0.0, "seconds_to_last_byte": 0.0}
    padding = total = 0
    try:
        async for chunk in stream:
            total += len(chunk)
            times["seconds_to_last_byte"] = time.monotonic() - started
            data = chunk
            if header is None:
                buffer += data
                if len(buffer) < wire.SEALED_HEADER:
                    continue
                header = _header(key, bytes(buffer[: wire.SEALED_HEADER]))
                data, buffer = bytes(buffer[wire.SEALED_HEADER :]), bytearray()
            length, announced = header
            if showing is None:
                taken = data[: length + wire.TAG - len(buffer)]
                buffer += taken
                data = data[len(taken) :]
                if len(buffer) == length + wire.TAG:
                    times["seconds_to_page_bytes"] = times["seconds_to_last_byte"]
                    showing = asyncio.create_task(_show(bytes(buffer), key, keep, started, on_page))
                    buffer = bytearray()
            elif showing.done():
                showing.result()  # a page that failed to unpack ends the transfer now
            padding += len(data)
            if padding > announced:
                raise BentoError(f"the box sent more padding than the {announced} bytes it announced")
            if data and expected_padding.take(len(data)) != data:
                raise BentoError("the padding was altered on its way: it is not what the page's key makes")
            if progress is not None:
                progress(total, wire.SEALED_HEADER + length + wire.TAG + announced)
        found = await showing if showing is not None else {}
    finally:
        if showing is not None:  # left early: stop it, and take its outcome (the first error wins)
            showing.cancel()
            await asyncio.gather(showing, return_exceptions=True)
    ended = stream.ended
    if ended is not None and ended.state is not SessionState.COMPLETED:
        error = ended.error
        why = (
            (error.message if error.type == "BrowseError" else f"{error.type}: {error.message}")
            if error
            else ""
        )
        raise BentoError(
            f"Browser could not fetch the page: {why or ended.reason}",
            fix="check the URL; the box fetches it from the exit, within its exit policy and limits",
        )
    if header is None or not found:
        raise BentoError("the session ended before the whole page arrived")
    if padding != announced:
        raise BentoError(f"the box announced {announced} bytes of padding and sent {padding}")
    usage = ended.usage if ended is not None else None
    return {
        **found,
        **times,
        "archive_bytes": header[0],
        "padding_bytes": padding,
        "received_bytes": total,
        "usage": usage,
    }


async def _show(
    sealed: bytes,
    key: bytes,
    keep: Keep,
    started: float,
    on_page: Callable[[Path], Awaitable[None]] | None,
) -> dict[str, Any]:
    found = await asyncio.to_thread(lambda: keep(_opened(key, sealed)))
    found["seconds_to_page"] = time.monotonic() - started
    if on_page is not None:  # the page is shown now; the padding may still be arriving
        await on_page(found["main"])
    return found


def _header(key: bytes, sealed: bytes) -> tuple[int, int]:
    """``(archive length, padding length)`` from the sealed header; refuses one that does not open."""
    try:
        length, padding = wire.open_header(key, sealed)
    except wire.WireError as exc:
        raise BentoError(f"the answer is not a Browser page sealed for you: {exc}") from None
    if not 0 < length <= MAX_ARCHIVE:
        raise BentoError(f"the box announced a {length}-byte page; this client accepts 1 to {MAX_ARCHIVE}")
    return length, padding


def _opened(key: bytes, sealed: bytes) -> bytes:
    try:
        return wire.open_archive(key, sealed)
    except wire.WireError as exc:
        raise BentoError(f"the page's archive was refused: {exc}") from None


def _unpack(archive: bytes, out: Path) -> dict[str, Any]:
    """Read the (opened, so authentic) archive, make it inert and write it into ``out``."""
    copy = saved.read_archive(archive)
    try:
        main = copy.write(out)
    except OSError as exc:
        raise BentoError(f"cannot write the page into {out}: {exc.strerror}") from None
    return {"index": copy.index, "main": main.resolve()}
