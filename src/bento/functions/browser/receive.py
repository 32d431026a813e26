"""Receiving a Browser transfer: the sealed header, the page, then exactly the announced padding.

Everything the box sends is checked here: the header and the archive open under the page's
key (``wire``), and each byte of the padding is the one that key makes. The page is opened,
unpacked and shown while the padding is still arriving (see :func:`receive`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bento.client.stream import SessionStream
from bento.errors import BentoError
from bento.protocol.messages import SessionState

from . import saved, wire

MAX_ARCHIVE = 256 << 20  # the most a client accepts from a box before refusing the transfer
Progress = Callable[[int, int | None], None]  # (bytes received, bytes expected once known)

Keep = Callable[[bytes], dict[str, Any]]  # the opened archive -> what was kept of it


async def receive(
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
                header = read_header(key, bytes(buffer[: wire.SEALED_HEADER]))
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
    found = await asyncio.to_thread(lambda: keep(opened(key, sealed)))
    found["seconds_to_page"] = time.monotonic() - started
    if on_page is not None:  # the page is shown now; the padding may still be arriving
        await on_page(found["main"])
    return found


def read_header(key: bytes, sealed: bytes) -> tuple[int, int]:
    """``(archive length, padding length)`` from the sealed header; refuses one that does not open."""
    try:
        length, padding = wire.open_header(key, sealed)
    except wire.WireError as exc:
        raise BentoError(f"the answer is not a Browser page sealed for you: {exc}") from None
    if not 0 < length <= MAX_ARCHIVE:
        raise BentoError(f"the box announced a {length}-byte page; this client accepts 1 to {MAX_ARCHIVE}")
    return length, padding


def opened(key: bytes, sealed: bytes) -> bytes:
    try:
        return wire.open_archive(key, sealed)
    except wire.WireError as exc:
        raise BentoError(f"the page's archive was refused: {exc}") from None


def unpack(archive: bytes, out: Path) -> dict[str, Any]:
    """Read the (opened, so authentic) archive, make it inert and write it into ``out``."""
    copy = saved.read_archive(archive)
    try:
        main = copy.write(out)
    except OSError as exc:
        raise BentoError(f"cannot write the page into {out}: {exc.strerror}") from None
    return {"index": copy.index, "main": main.resolve()}
