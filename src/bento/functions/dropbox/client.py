"""Dropbox from the user's side: seal and deposit data, and fetch it with a capability.

``put`` seals the data under a fresh key (``bento.runtime.sealing``) before it leaves, and
returns a capability string::

    bento-dropbox:ONION:FUNCTION:INVOCATION:ID:FETCH:KEY:DIGEST

the box and the Dropbox function, the token that invokes it (see :func:`carried_token`),
the deposit's id (no secret), its fetch right, the key that opens it and the SHA-256 of the
sealed bytes (``-`` for a reserved deposit, sealed after its capability was made: then the
seal alone guards it). Whoever holds it can fetch the deposit, within its count and expiry,
and open it; it cannot fill or change a deposit, and the box, which never sees the key, can
neither read the deposit nor substitute another unnoticed. It is shown once and kept
nowhere by the client. ``reserve`` returns the capability and, apart, a :class:`FillRight`
for the depositor; ``fill`` seals with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.client.narrowing import narrow
from bento.client.stream import Reconnecting
from bento.errors import BentoError
from bento.functions import deploy
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs
from bento.runtime import sealing

from .deposits import ID_BYTES, MAX_FETCHES, SECRET_BYTES

PACKAGE = "bento_dropbox"
BOX_MODULES = ("__init__", "deposits", "function")
PREFIX = "bento-dropbox"
SEND_CHUNK = 256 << 10
MAX_GET = 1 << 30  # the most a client accepts for one deposit
DEPOSIT = b"bento-dropbox-deposit"  # what the sealed bytes are (sealing's context)
FAILURE = b"bento-dropbox-failure"  # a depositor's sealed reason for leaving no deposit
MAX_FAILURE = 2000
UNBOUND = "-"  # a reserved deposit's digest: not known when its capability was made
# A get the box refuses because the Dropbox's storage transfers (4 at once a function) are all
# in use spends no fetch: it is tried again, each wait twice the last, for this long at most.
BUSY_PATIENCE = 60.0
BUSY_FIRST_WAIT, BUSY_MOST_WAIT = 0.25, 4.0


class _Busy(BentoError):
    """The Dropbox's storage transfers were all in use (the runtime's StorageBusy)."""


def code() -> bytes:
    return deploy.package(Path(__file__).parent, PACKAGE, BOX_MODULES)


def manifest() -> Manifest:
    return Manifest(
        name=f"dropbox-{deploy.version(code())}",
        module=f"{PACKAGE}.function",
        description="Dropbox: sealed deposits fetched with a right, within a count of fetches and an expiry",
        needs=Needs(storage_mb=32, memory_mb=128, wall_seconds=300),
    )


def carried_token(function: Deployment, deposit_id: str, *, until: float) -> str:
    """The invocation token a capability carries, the one place it is chosen: the owner's token
    narrowed (offline, ``bento.client.narrowing``) to ``get`` of this deposit alone, until the
    deposit expires. Its holder can invoke nothing else of the owner's Dropbox and cannot widen
    it. It sets no count of uses: the deposit's own count of fetches, kept atomically by the
    Dropbox, is the one that counts, and a ``get`` that finds the deposit still being filled
    must not spend a fetch."""
    return narrow(
        function.invocation_token,
        entries=["get"],
        until=datetime.fromtimestamp(until, UTC),
        args=[deposit_id],
    )


@dataclass(frozen=True)
class Capability:
    """The right to fetch one deposit and open it."""

    onion: str
    function_id: str
    invocation_token: str
    deposit_id: str
    fetch_right: str
    key: bytes
    digest: str  # hex SHA-256 of the sealed deposit, or UNBOUND

    def __str__(self) -> str:
        parts = (self.onion, self.function_id, self.invocation_token, self.deposit_id, self.fetch_right)
        return ":".join((PREFIX, *parts, sealing.encode_key(self.key), self.digest))

    def __repr__(self) -> str:  # never in a log or a traceback
        return f"Capability({self.onion[:16]}…, {self.function_id}, {self.deposit_id})"

    @classmethod
    def parse(cls, text: str) -> Capability:
        parts = text.strip().split(":")
        try:
            if len(parts) != 8 or parts[0] != PREFIX or not all(parts):
                raise ValueError
            onion, function_id, token, deposit_id, fetch, key, digest = parts[1:]
            bytes.fromhex(deposit_id + fetch + (digest if digest != UNBOUND else ""))
            if len(deposit_id) != 2 * ID_BYTES or len(fetch) != 2 * SECRET_BYTES:
                raise ValueError
            if digest != UNBOUND and len(digest) != 64:
                raise ValueError
            return cls(onion, function_id, token, deposit_id, fetch, sealing.decode_key(key), digest)
        except ValueError:  # sealing.SealError is one
            raise BentoError(
                "that is not a Dropbox capability",
                fix=f"give the whole {PREFIX}:... string `bento dropbox put` printed",
            ) from None

    def deployment(self) -> Deployment:
        """Enough of a deployment to invoke ``get``: the function and the right to invoke it."""
        return Deployment(
            self.function_id, "dropbox", self.onion, "", "", self.invocation_token, "", "", [], 0.0
        )


@dataclass(frozen=True)
class FillRight:
    """The depositor's right to fill one reserved deposit, and the key it seals under."""

    deployment: Deployment
    deposit_id: str
    fill_right: str
    key: bytes

    def __repr__(self) -> str:  # never in a log or a traceback
        return f"FillRight({self.deployment.function_id}, {self.deposit_id})"


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
    """Seal and deposit ``data``; the capability to fetch it, and the deposit's terms."""
    key = sealing.new_key()
    sealed = sealing.seal(key, data, DEPOSIT)
    function, _ = await deploy.ensure(box, keyring, code(), manifest())
    stream = await box.start(function, "put", [fetches, seconds])
    async with stream:
        for start in range(0, len(sealed), SEND_CHUNK):
            await stream.send(sealed[start : start + SEND_CHUNK])
            if progress is not None:
                progress(min(len(data), start + SEND_CHUNK))
        await stream.close_input()
        receipt = _receipt(await _all(stream, 4096), "id", "fetch")
    assert receipt.id is not None and receipt.fetch is not None
    token = carried_token(function, receipt.id, until=receipt.expires_at)
    digest = hashlib.sha256(sealed).hexdigest()
    terms = {**receipt.terms(), "bytes": len(data), "sealed_bytes": len(sealed)}
    return Capability(box.onion, function.function_id, token, receipt.id, receipt.fetch, key, digest), terms


async def reserve(
    box: Box, function: Deployment, *, fetches: int = 1, seconds: float = 86400
) -> tuple[FillRight, Capability, dict[str, Any]]:
    """A deposit with no data yet: the right to fill it (keep it), the capability to fetch it
    (hand it out), and the terms."""
    async with await box.start(function, "reserve", [fetches, seconds]) as stream:
        await stream.close_input()
        receipt = _receipt(await _all(stream, 4096), "id", "fill", "fetch")
    ident, fill_right, fetch = receipt.id, receipt.fill, receipt.fetch
    assert ident is not None and fill_right is not None and fetch is not None
    key = sealing.new_key()
    token = carried_token(function, ident, until=receipt.expires_at)
    capability = Capability(box.onion, function.function_id, token, ident, fetch, key, UNBOUND)
    return FillRight(function, ident, fill_right, key), capability, receipt.terms()


async def fill(box: Box, right: FillRight, data: bytes, *, error: str = "") -> dict[str, Any]:
    """Seal ``data`` and give it to the reserved deposit, or (``error``) the sealed reason it has none."""
    if error:
        sealed = sealing.seal(_failure_key(right.key), error[:MAX_FAILURE].encode(), FAILURE)
    else:
        sealed = sealing.seal(right.key, data, DEPOSIT)
    async with await box.start(right.deployment, "fill", [right.deposit_id]) as stream:
        line = {"fill": right.fill_right, "failed": bool(error), "bytes": len(sealed),
                "sha256": hashlib.sha256(sealed).hexdigest()}  # fmt: skip
        await stream.send(json.dumps(line).encode() + b"\n")
        for start in range(0, len(sealed), SEND_CHUNK):
            await stream.send(sealed[start : start + SEND_CHUNK])
        await stream.close_input()
        return _receipt(await _all(stream, 4096)).terms()


def _failure_key(key: bytes) -> bytes:
    """The key a failure is sealed under: another than the deposit's, so that the two never
    share a nonce under one key (a depositor may seal its data, fail to send it, and then
    seal its reason)."""
    return hashlib.sha256(FAILURE + b"\0" + key).digest()


class Receipt(BaseModel):
    """What the Dropbox answers ``put``, ``reserve`` and ``fill``: hostile until parsed here
    (its id and rights go into a capability string, so they are exactly hex of their sizes)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    id: Annotated[str, StringConstraints(pattern=f"^[0-9a-f]{{{2 * ID_BYTES}}}$")] | None = None
    fill: Annotated[str, StringConstraints(pattern=f"^[0-9a-f]{{{2 * SECRET_BYTES}}}$")] | None = None
    fetch: Annotated[str, StringConstraints(pattern=f"^[0-9a-f]{{{2 * SECRET_BYTES}}}$")] | None = None
    fetches: int = Field(ge=1, le=MAX_FETCHES)
    fetches_left: int = Field(ge=0, le=MAX_FETCHES)
    expires_at: float
    bytes: int = Field(ge=0)
    pending: bool = False
    failed: bool = False

    def terms(self) -> dict[str, Any]:
        """The deposit's terms, for the user: no right among them."""
        return self.model_dump(exclude={"id", "fill", "fetch"})


def _receipt(answer: bytes, *rights: str) -> Receipt:
    try:
        receipt = Receipt.model_validate_json(answer)
    except ValueError:  # pydantic's ValidationError is one
        receipt = None
    if receipt is None or any(getattr(receipt, name) is None for name in rights):
        raise BentoError("the Dropbox answered something that is not a deposit receipt")
    return receipt


async def get(
    box: Box,
    capability: Capability,
    *,
    progress: Progress | None = None,
    patience: float = BUSY_PATIENCE,
    on_reconnect: Reconnecting | None = None,
) -> bytes:
    """The deposit, opened (spending one of its fetches). Refused unless the sealed bytes are
    the ones the capability names and open under its key: a forged, altered or swapped deposit.
    While the Dropbox's storage transfers are all in use it asks again, backing off, for
    ``patience`` seconds, and then says so (no fetch is spent by those refusals).
    ``on_reconnect`` is told each time the transfer's connection dropped and is tried again."""
    loop = asyncio.get_running_loop()
    deadline, wait = loop.time() + patience, BUSY_FIRST_WAIT
    while True:
        try:
            sealed, failed = await _fetch(box, capability, progress, on_reconnect)
            break
        except _Busy:
            if loop.time() + wait > deadline:
                raise BentoError(
                    f"the Dropbox stayed busy for {patience:g} s: its storage transfers were all in use, "
                    "by other fetches or deposits (no fetch of yours was spent)",
                    fix="try again later",
                ) from None
        await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # jitter: fetchers refused together part
        wait = min(2 * wait, BUSY_MOST_WAIT)
    if capability.digest != UNBOUND and hashlib.sha256(sealed).hexdigest() != capability.digest:
        raise BentoError(
            "the Dropbox sent a deposit other than the one this capability names (its SHA-256 differs): "
            "substituted or altered, so refused"
        )
    try:
        if failed:
            data = sealing.unseal(_failure_key(capability.key), sealed, FAILURE)
        else:
            data = sealing.unseal(capability.key, sealed, DEPOSIT)
    except sealing.SealError:
        raise BentoError(
            "the deposit does not open under this capability's key: forged, altered or swapped, so refused"
        ) from None
    if failed:
        raise BentoError(f"the depositor failed and left no data: {data.decode(errors='replace')}")
    return data


async def _fetch(
    box: Box, capability: Capability, progress: Progress | None, on_reconnect: Reconnecting | None
) -> tuple[bytes, bool]:
    """One ``get``: the sealed bytes, and whether they are the depositor's sealed failure."""
    stream = await box.start(capability.deployment(), "get", [capability.deposit_id])
    stream.on_reconnect = on_reconnect
    async with stream:
        await stream.send(capability.fetch_right.encode())
        await stream.close_input()
        sealed = await _all(stream, MAX_GET, progress)
        result = stream.ended.result if stream.ended is not None else None
    return sealed, isinstance(result, dict) and result.get("failed") is True


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
        if error is not None and error.type == "StorageBusy":
            raise _Busy(error.message)
        why = (
            (error.message if error.type == "DepositError" else f"{error.type}: {error.message}")
            if error
            else ""
        )
        raise BentoError(f"the Dropbox refused: {why or (ended.reason if ended else 'no answer')}")
    return bytes(data)
