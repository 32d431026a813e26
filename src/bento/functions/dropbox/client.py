"""Dropbox from the user's side: deposit data, and fetch it with a capability.

``put`` returns a capability string, ``bento-dropbox:ONION:FUNCTION:INVOCATION:TOKEN``: the
box, the Dropbox function and a narrowed right to invoke it (``get`` only, as many times as
the deposit may be fetched, until it expires: ``bento.client.narrowing``), and the deposit's
token. Whoever holds it can fetch the deposit (within its limits) and nothing else of the
user's; it is shown once and kept nowhere by the client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.client.narrowing import narrow
from bento.errors import BentoError
from bento.functions import deploy
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs

from .deposits import TOKEN_BYTES

PACKAGE = "bento_dropbox"
BOX_MODULES = ("__init__", "deposits", "function")
PREFIX = "bento-dropbox"
SEND_CHUNK = 256 << 10
MAX_GET = 1 << 30  # the most a client accepts for one deposit


def code() -> bytes:
    return deploy.package(Path(__file__).parent, PACKAGE, BOX_MODULES)


def manifest() -> Manifest:
    return Manifest(
        name=f"dropbox-{deploy.version(code())}",
        module=f"{PACKAGE}.function",
        description="Dropbox: deposits fetched with a token, within a count of fetches and an expiry",
        needs=Needs(storage_mb=32, memory_mb=128, wall_seconds=300),
    )


@dataclass(frozen=True)
class Capability:
    onion: str
    function_id: str
    invocation_token: str
    token: str

    def __str__(self) -> str:
        return f"{PREFIX}:{self.onion}:{self.function_id}:{self.invocation_token}:{self.token}"

    def __repr__(self) -> str:  # never in a log or a traceback
        return f"Capability({self.onion[:16]}…, {self.function_id})"

    @classmethod
    def parse(cls, text: str) -> Capability:
        parts = text.strip().split(":")
        if len(parts) != 5 or parts[0] != PREFIX or len(parts[4]) != 2 * TOKEN_BYTES or not all(parts):
            raise BentoError(
                "that is not a Dropbox capability",
                fix=f"give the whole {PREFIX}:... string `bento dropbox put` printed",
            )
        return cls(*parts[1:])

    def deployment(self) -> Deployment:
        """Enough of a deployment to invoke ``get``: the function and the right to invoke it."""
        return Deployment(
            self.function_id, "dropbox", self.onion, "", "", self.invocation_token, "", "", [], 0.0
        )


Progress = Callable[[int], None]  # told the bytes sent (put) or received (get) so far


async def put(
    box: Box,
    keyring: Keyring,
    data: bytes,
    *,
    fetches: int = 1,
    seconds: float = 86400,
    progress: Progress | None = None,
) -> tuple[Capability, dict[str, Any]]:
    """Deposit ``data``; the capability to fetch it, and the deposit's terms."""
    function, _ = await deploy.ensure(box, keyring, code(), manifest())
    stream = await box.start(function, "put", [fetches, seconds])
    async with stream:
        for start in range(0, len(data), SEND_CHUNK):
            await stream.send(data[start : start + SEND_CHUNK])
            if progress is not None:
                progress(min(len(data), start + SEND_CHUNK))
        await stream.close_input()
        terms = _receipt(await _all(stream, 4096))
    if "token" not in terms:
        raise BentoError("the Dropbox answered something that is not a deposit receipt")
    token = str(terms.pop("token"))
    ticket = narrow(function.invocation_token, entries=["get"], uses=fetches, until=_expiry(terms))
    return Capability(box.onion, function.function_id, ticket, token), terms


async def reserve(
    box: Box, function: Deployment, *, fetches: int = 1, seconds: float = 86400
) -> tuple[Capability, dict[str, Any]]:
    """A deposit with no data yet (``fill`` gives it its data): its capability and terms."""
    async with await box.start(function, "reserve", [fetches, seconds]) as stream:
        await stream.close_input()
        terms = _receipt(await _all(stream, 4096))
    if "token" not in terms:
        raise BentoError("the Dropbox answered something that is not a deposit receipt")
    token = str(terms.pop("token"))
    ticket = narrow(function.invocation_token, entries=["fill", "get"], until=_expiry(terms))
    return Capability(box.onion, function.function_id, ticket, token), terms


def _expiry(terms: dict[str, Any]) -> datetime | None:
    """When the deposit expires, by the box's clock: its capability's token ends then too."""
    expires = terms.get("expires_at")
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise BentoError("the Dropbox answered a deposit receipt with no expiry")
    return datetime.fromtimestamp(expires, UTC)


async def fill(box: Box, capability: Capability, data: bytes, *, error: str = "") -> dict[str, Any]:
    """Give the reserved deposit ``capability`` its data, or the reason it has none."""
    async with await box.start(capability.deployment(), "fill", []) as stream:
        line = {"token": capability.token, "error": error, "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        await stream.send(json.dumps(line).encode() + b"\n")
        for start in range(0, len(data), SEND_CHUNK):
            await stream.send(data[start : start + SEND_CHUNK])
        await stream.close_input()
        return _receipt(await _all(stream, 4096))


def _receipt(answer: bytes) -> dict[str, Any]:
    try:
        terms = json.loads(answer)
    except ValueError:
        terms = None
    if not isinstance(terms, dict):
        raise BentoError("the Dropbox answered something that is not a deposit receipt")
    return terms


async def get(box: Box, capability: Capability, *, progress: Progress | None = None) -> bytes:
    """The deposit's bytes (counting one of its fetches)."""
    stream = await box.start(capability.deployment(), "get", [])
    async with stream:
        await stream.send(capability.token.encode())
        await stream.close_input()
        return await _all(stream, MAX_GET, progress)


async def _all(stream: Any, limit: int, progress: Progress | None = None) -> bytes:
    data = bytearray()
    async for chunk in stream:
        data += chunk
        if progress is not None:
            progress(len(data))
        if len(data) > limit:
            raise BentoError(f"the Dropbox sent more than {limit} bytes")
    ended = stream.ended
    if ended is None or ended.state is not SessionState.COMPLETED:
        error = ended.error if ended is not None else None
        why = (
            (error.message if error.type == "DepositError" else f"{error.type}: {error.message}")
            if error
            else ""
        )
        raise BentoError(f"the Dropbox refused: {why or (ended.reason if ended else 'no answer')}")
    return bytes(data)
