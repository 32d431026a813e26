"""Browser's deposit into a Dropbox on another box: the poster's figure 2, box side.

The user asks Browser on the exit box for a page and goes away. Browser deploys a Dropbox
on the box she named, reserves a deposit there, hands her the capability, fetches the page,
and fills the deposit with the padded transfer, which she fetches later from the Dropbox's
box with ``bento dropbox get``.

This runs in Browser's sandbox and reaches the other box with Bento's own client library
over the box's Tor for functions (the manifest's ``needs.call_boxes``): the box must offer
the ``bento`` package to functions. Imported only by the entry point that needs it, so plain
Browser runs on boxes that offer neither.

The deposit is sealed for her (the Dropbox client seals it under a key that travels only in
her capability), on top of the page's own seal under her page key. The right to fill it
stays in this process's memory; the capability, which fetches it and cannot fill it, goes in
the receipt sent to the user, with the Dropbox deployed here: hers (she gets its shutdown
token too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.client.stream import Retry
from bento.client.via_broker import BrokerTransport
from bento.errors import BentoError
from bento.functions.dropbox import client as dropbox
from bento.protocol.messages import CodeKind

TIMEOUT = 300.0  # seconds for one exchange with the Dropbox's box, over two Tor circuits
_RETRY = Retry(attempts=3)
FILL_ATTEMPTS = 3


@dataclass(frozen=True)
class Place:
    """A reserved deposit: the right to fill it (kept here), the capability to fetch it (the
    user's), and the Dropbox's deployment."""

    fill_right: dropbox.FillRight
    capability: dropbox.Capability
    deployment: Deployment
    terms: dict[str, object]

    def __repr__(self) -> str:  # never a token in a log or a traceback
        return f"Place({self.deployment.function_id} on {self.capability.onion[:16]}…)"

    def receipt(self) -> dict[str, object]:
        """What the user needs: the capability, and the Dropbox to keep in her keyring."""
        d = self.deployment
        return {
            "capability": str(self.capability),
            "dropbox": {
                "function_id": d.function_id, "name": d.name, "onion": d.onion,
                "relay_fingerprint": d.relay_fingerprint, "relay_nickname": d.relay_nickname,
                "invocation_token": d.invocation_token, "shutdown_token": d.shutdown_token,
                "boot_id": d.boot_id, "entry_points": d.entry_points, "deployed_at": d.deployed_at,
            },
            "terms": self.terms,
        }  # fmt: skip


def _box(onion: str) -> Box:
    return Box(onion.removesuffix(".onion"), socks=None, transport=BrokerTransport(), retry=_RETRY)


def reserve(onion: str, fetches: int, seconds: float) -> Place:
    """Deploy a Dropbox on the box ``onion`` and reserve a deposit there."""

    async def run() -> Place:
        async with asyncio.timeout(TIMEOUT), _box(onion) as box:
            deployment = await box.deploy(dropbox.code(), dropbox.manifest(), kind=CodeKind.TAR_GZ)
            right, capability, terms = await dropbox.reserve(
                box, deployment, fetches=fetches, seconds=seconds
            )
        return Place(right, capability, deployment, terms)

    return asyncio.run(run())


def fill(place: Place, data: bytes, error: str = "") -> dict[str, object]:
    """Fill the reserved deposit with ``data`` (or say why there is none). The Dropbox checks
    what arrives against its length and hash; a damaged fill (a part sent twice across a
    dropped connection) leaves the deposit reserved, and is tried again."""

    async def run() -> dict[str, object]:
        async with asyncio.timeout(TIMEOUT), _box(place.capability.onion) as box:
            return await dropbox.fill(box, place.fill_right, data, error=error)

    for attempt in range(FILL_ATTEMPTS):
        try:
            return asyncio.run(run())
        except BentoError as exc:
            if attempt + 1 == FILL_ATTEMPTS or "arrived damaged" not in str(exc):
                raise
    raise AssertionError("unreachable")
