"""Browser composed with Dropbox (the poster's figure 2), from the user's side.

``deposit`` asks Browser on the exit box to fetch a page into a Dropbox on another box,
waits only for the receipt (Browser has reserved the deposit: a second or so over Tor),
and detaches: the page is fetched and deposited while the user is gone. Later, from
anywhere, ``open_transfer`` opens and unpacks what ``bento dropbox get`` fetched with the
capability, under the page key.

The page is sealed under a key the client made and sent to Browser inside the session
(``wire``): the Dropbox holds bytes it can neither read nor replace unnoticed. The capability
and the key are the only way to the page: both are returned (for the user to see), never
logged; the Dropbox deployed for her goes to her keyring, so ``bento shutdown`` ends it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError
from bento.functions.dropbox.client import Capability

from . import wire
from .client import Options, Page, _arguments, _discard_if_empty, _prepare, _start
from .receive import opened, read_header, unpack

MAX_RECEIPT = 16 << 10


@dataclass(frozen=True)
class Deposit:
    """What the user takes away: the capability, the page's key, and where the work goes on."""

    capability: Capability
    page_key: bytes  # opens the page (wire); whoever should read the page needs it with the capability
    dropbox: Deployment  # the Dropbox Browser deployed for her (kept in her keyring)
    browser_box: str
    session_id: str  # Browser's session, still fetching
    function_id: str
    deployed: bool
    terms: dict[str, Any]

    def __repr__(self) -> str:  # the capability never reaches a log
        return f"Deposit(session {self.session_id} on {self.browser_box[:16]}…)"  # nor the key

    def as_json(self) -> dict[str, Any]:
        return {
            "capability": str(self.capability),
            "page_key": wire.encode_key(self.page_key),
            "dropbox_box": self.dropbox.onion,
            "dropbox_function_id": self.dropbox.function_id,
            "session_id": self.session_id,
            "function_id": self.function_id,
            "deployed": self.deployed,
            "fetches": self.terms.get("fetches_left"),
            "expires_at": self.terms.get("expires_at"),
        }


async def deposit(
    box: Box,
    keyring: Keyring,
    url: str,
    dropbox_onion: str,
    options: Options | None = None,
    *,
    fetches: int = 1,
    seconds: float = 86400,
) -> Deposit:
    """Have Browser on ``box`` fetch ``url`` into a Dropbox on ``dropbox_onion``; returns
    once the deposit is reserved, and leaves the session running at the box.

    ``options.timing`` and ``options.cover`` are refused, not ignored: both shape the
    transfer on the user's own link, and here there is none. The page goes box to box while
    she is away, and she fetches it when she likes (``bento dropbox get``), so her download's
    start says nothing of when the page was ready; its size is hidden by ``options.pad``."""
    if options is not None and (options.timing is not None or options.cover is not None):
        raise BentoError(
            "a deposit has no transfer on your link to schedule or cover: the page goes from box to box",
            fix="drop the delivery schedule (--deliver-at) and the cover; the deposit is padded (--pad)",
        )
    if dropbox_onion.removesuffix(".onion") == box.onion:
        raise BentoError(
            "the Dropbox must be on another box than Browser",
            fix="name a different box with --via-dropbox (the point: no one box holds both ends)",
        )
    arguments = [*_arguments(url, options or Options()), dropbox_onion, fetches, seconds]
    engine, key = (options or Options()).engine, wire.new_key()
    stream, function, deployed = await _start(
        box, keyring, "browse_to_dropbox", arguments, via_dropbox=True, engine=engine, key=key
    )
    async with stream:  # leaving it detaches: the session runs on at the box
        line = bytearray()
        while b"\n" not in line and len(line) <= MAX_RECEIPT:
            chunk = await stream.receive()
            if chunk is None:
                ended = stream.ended
                error = ended.error if ended is not None else None
                why = error.message if error is not None else (ended.reason if ended else "")
                raise BentoError(
                    f"Browser could not reserve a deposit with the Dropbox: {why}",
                    fix="check that the other box allows calls from functions and offers storage",
                )
            line += chunk
    receipt = _receipt(bytes(line).partition(b"\n")[0])
    keyring.add(receipt["dropbox"])
    return Deposit(
        capability=receipt["capability"],
        page_key=key,
        dropbox=receipt["dropbox"],
        browser_box=box.onion,
        session_id=stream.session_id,
        function_id=function.function_id,
        deployed=deployed,
        terms=receipt["terms"],
    )


def _receipt(line: bytes) -> dict[str, Any]:
    try:
        given = json.loads(line)
        capability = Capability.parse(str(given["capability"]))
        # What the receipt names of a Deployment (the keyring's own fields keep their defaults:
        # a Browser on a box of another version may name fewer); a required one missing refuses.
        names = {f.name for f in fields(Deployment)} - {"token_keys", "session_rights"}
        dropbox = Deployment(
            **{name: value for name, value in dict(given["dropbox"]).items() if name in names}
        )
        terms = dict(given["terms"])
    except (ValueError, KeyError, TypeError, BentoError):
        raise BentoError("Browser's answer is not a Dropbox receipt") from None
    if dropbox.function_id != capability.function_id or dropbox.onion != capability.onion:
        raise BentoError("Browser's receipt names two different Dropboxes")
    return {"capability": capability, "dropbox": dropbox, "terms": terms}


def open_transfer(data: bytes, out: Path, key: bytes) -> Page:
    """A Browser transfer (as deposited: header, archive, padding) opened under the page's
    ``key``, every byte checked, and unpacked into ``out`` (created; must be empty)."""
    started = time.monotonic()
    created = _prepare(out)
    try:
        if len(data) < wire.SEALED_HEADER:
            raise BentoError("the deposit is not a Browser page (too short for its header)")
        length, padding = read_header(key, data[: wire.SEALED_HEADER])
        page_end = wire.SEALED_HEADER + length + wire.TAG
        if len(data) != page_end + padding:
            raise BentoError(
                f"the deposit has {len(data)} bytes; its Browser header announces {page_end + padding}"
            )
        if wire.Padding(key).take(padding) != data[page_end:]:
            raise BentoError("the page's padding was altered: it is not what the page's key makes")
        found = unpack(opened(key, data[wire.SEALED_HEADER : page_end]), out)
    except BaseException:
        if created:
            _discard_if_empty(out)
        raise
    seconds = time.monotonic() - started
    return Page(
        url=str(found["index"].get("url", "")), directory=out, archive_bytes=length,
        padding_bytes=padding, received_bytes=len(data), seconds_to_page=seconds, seconds=seconds,
        **found,
    )  # fmt: skip
