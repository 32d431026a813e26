"""Deposits kept in the function's storage: sealed bytes, found by an id, opened by no one here.

The client seals a deposit before it leaves (``bento.runtime.sealing``; the key travels
only in the capability), so the box keeps ciphertext: reading its storage, or the box's
memory, shows sizes and times, never a deposit. A deposit is named by a random id that is
no secret, and has two rights, random 256-bit secrets of which the box keeps only SHA-256
hashes: the fill right (a reserved deposit's depositor's) and the fetch right (the
recipient's). Each opens only its own door: a fetch right cannot fill, a fill right cannot
fetch. A wrong right is told what a missing deposit is told.

Objects, per deposit: ``meta/<id>`` (JSON terms and the rights' hashes), ``data/<id>``
(the sealed bytes), and ``claim/<id>/<n>``, one per fetch made. A fetch spends a fetch by
creating the next claim with ``api.storage.create``, which exactly one of the Dropbox's
instances wins, so of many fetches at once exactly ``fetches`` succeed. The last fetch,
the expiry, or a depositor's failure deletes the deposit. A deposit's metadata is written
before its data, so the data of a ``put`` that died on the way, or any data or claim with no
metadata, is found and deleted by :meth:`Deposits.sweep`, which each new deposit runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    class Store(Protocol):
        def put(self, key: str, value: bytes) -> None: ...
        def create(self, key: str, value: bytes = b"") -> bool: ...
        def get(self, key: str, default: bytes | None = None) -> bytes | None: ...
        def delete(self, key: str) -> bool: ...
        def keys(self, prefix: str = "") -> list[str]: ...


SECRET_BYTES = 32  # each right
ID_BYTES = 16
MAX_FETCHES = 1000
MAX_SECONDS = 30 * 86400
WRITE_SECONDS = 900  # a put's data lands within this (its session's wall limit is less), or is swept
CLAIM_BYTES = len("claim/") + 2 * ID_BYTES + len("/1000")  # what one fetch's claim holds of the quota
META_BYTES = 1024  # what one deposit's metadata holds of the quota, at most
_ID = re.compile(f"^[0-9a-f]{{{2 * ID_BYTES}}}$")
_NOT_FOUND = "no deposit for this id and right (never made, fetched its last time, or expired)"


class DepositError(Exception):
    """A request Dropbox refuses; the message says why, for the user."""


def check_id(deposit_id: object) -> str:
    if not isinstance(deposit_id, str) or not _ID.match(deposit_id):
        raise DepositError(f"that is not a deposit id ({2 * ID_BYTES} hexadecimal digits)")
    return deposit_id


def check_terms(fetches: object, seconds: object) -> None:
    """Refuse terms a deposit cannot have, before anything is read or stored."""
    if isinstance(fetches, bool) or not isinstance(fetches, int) or not isinstance(seconds, int | float):
        raise DepositError("fetches is a whole number and seconds a number")
    if not 1 <= fetches <= MAX_FETCHES:
        raise DepositError(f"fetches must be 1 to {MAX_FETCHES}")
    if not 1 <= seconds <= MAX_SECONDS:  # NaN is refused too: it compares false
        raise DepositError(f"the expiry must be 1 s to {MAX_SECONDS // 86400} days")


def _hash(secret: str) -> str:
    try:
        raw = bytes.fromhex(secret)
    except ValueError:
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise DepositError(f"that is not a Dropbox right ({2 * SECRET_BYTES} hexadecimal digits)")
    return hashlib.sha256(raw).hexdigest()


def room_for(fetches: int) -> int:
    """The quota a deposit with ``fetches`` holds besides its data: metadata and claims."""
    return META_BYTES + fetches * CLAIM_BYTES


class Deposits:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def put(self, data: bytes, fetches: int, seconds: float) -> tuple[str, str, dict[str, Any]]:
        """Keep the sealed ``data``; its id, its fetch right (shown once, never stored), and terms."""
        fetch = secrets.token_hex(SECRET_BYTES)
        ident, meta = self._new(fetches, seconds, fetch_hash=_hash(fetch))
        meta["writing_until"] = self.clock() + WRITE_SECONDS  # if the data never lands: swept
        self._write(ident, meta)
        try:
            self.store.put(f"data/{ident}", data)
            del meta["writing_until"]
            meta["bytes"] = len(data)
            self._write(ident, meta)
        except BaseException:
            self._destroy(ident)  # its quota back now, not at its expiry
            raise
        return ident, fetch, _terms(meta)

    def reserve(self, fetches: int, seconds: float) -> tuple[str, str, str, dict[str, Any]]:
        """A deposit with no data yet, for :meth:`fill`: its id, fill right, fetch right, terms."""
        fill, fetch = secrets.token_hex(SECRET_BYTES), secrets.token_hex(SECRET_BYTES)
        ident, meta = self._new(fetches, seconds, fill_hash=_hash(fill), fetch_hash=_hash(fetch))
        meta["pending"] = True
        self._write(ident, meta)
        return ident, fill, fetch, _terms(meta)

    def fill(self, ident: str, fill: str, data: bytes, *, failed: bool = False) -> dict[str, Any]:
        """Give a reserved deposit its sealed data (or, ``failed``, the sealed reason it has none)."""
        meta = self._meta(check_id(ident))
        if meta is None or not _holds(meta, "fill_hash", fill):
            raise DepositError(_NOT_FOUND)
        if not meta.get("pending") or meta["expires_at"] <= self.clock():
            raise DepositError("this deposit is not waiting for its data (filled already, or expired)")
        try:
            self.store.put(f"data/{ident}", data)
            meta.update(pending=False, bytes=len(data), failed=failed)
            self._write(ident, meta)
        except BaseException:
            self.store.delete(f"data/{ident}")  # still reserved; its quota back, and fillable again
            raise
        return _terms(meta)

    def take(self, ident: str, fetch: str) -> tuple[bytes, dict[str, Any]]:
        """The deposit's sealed bytes, spending one fetch; its last one deletes it. The terms
        say ``failed`` where the bytes are the depositor's sealed reason, not a deposit."""
        meta = self._meta(check_id(ident))
        if meta is None or not _holds(meta, "fetch_hash", fetch) or "writing_until" in meta:
            raise DepositError(_NOT_FOUND)
        if meta["expires_at"] <= self.clock():
            self._destroy(ident)
            raise DepositError(_NOT_FOUND)
        if meta.get("pending"):  # costs no fetch: the depositor is still at work
            raise DepositError("nothing deposited yet: its depositor is still at work; try again later")
        spent = self._claim(ident, int(meta["fetches"]))
        if spent is None:
            raise DepositError(_NOT_FOUND)
        try:
            data = self.store.get(f"data/{ident}")
        except BaseException:  # the box refused the read (busy): the fetch is given back
            self.store.delete(f"claim/{ident}/{spent}")
            raise
        if data is None:  # deleted meanwhile (by its last fetch, or the sweep)
            self._destroy(ident)
            raise DepositError(_NOT_FOUND)
        left = int(meta["fetches"]) - spent - 1
        if left <= 0 or meta.get("failed"):  # a failure is told once
            self._destroy(ident)
        return data, {**_terms(meta), "fetches_left": max(left, 0), "failed": bool(meta.get("failed"))}

    def sweep(self) -> int:
        """Delete expired deposits, puts that died before their data landed, and data or claims
        with no metadata; returns how many deposits that was."""
        now, gone = self.clock(), set()
        # Data and claims first: a deposit's metadata is written before them, so one listed
        # here without metadata listed after it has none, and is an orphan.
        others = self.store.keys("data/") + self.store.keys("claim/")
        for key in self.store.keys("meta/"):
            ident = key.removeprefix("meta/")
            meta = self._meta(ident)
            if meta is None or meta["expires_at"] <= now or meta.get("writing_until", now) < now:
                self._destroy(ident)
                gone.add(ident)
        kept = {key.removeprefix("meta/") for key in self.store.keys("meta/")}
        for key in others:
            ident = key.split("/")[1]
            if ident not in kept and self.store.delete(key):
                gone.add(ident)
        return len(gone)

    def _new(self, fetches: int, seconds: float, **rights: str) -> tuple[str, dict[str, Any]]:
        check_terms(fetches, seconds)
        self.sweep()
        meta = {"fetches": fetches, "expires_at": self.clock() + seconds, "bytes": 0, **rights}
        return secrets.token_hex(ID_BYTES), meta

    def _claim(self, ident: str, fetches: int) -> int | None:
        """The number of the fetch this call spent, or None if all are spent. The listing
        only saves asking for claims already made: which free one is ours, ``create`` decides."""
        made = set(self.store.keys(f"claim/{ident}/"))
        for number in range(fetches):
            if f"claim/{ident}/{number}" not in made and self.store.create(f"claim/{ident}/{number}"):
                return number
        return None

    def _meta(self, ident: str) -> dict[str, Any] | None:
        raw = self.store.get(f"meta/{ident}")
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None

    def _write(self, ident: str, meta: dict[str, Any]) -> None:
        self.store.put(f"meta/{ident}", json.dumps(meta).encode())

    def _destroy(self, ident: str) -> None:
        # The data first: a fetch that wins a claim after the claims are gone finds none.
        self.store.delete(f"data/{ident}")
        self.store.delete(f"meta/{ident}")
        for key in self.store.keys(f"claim/{ident}/"):
            self.store.delete(key)


def _holds(meta: dict[str, Any], which: str, secret: str) -> bool:
    """Whether ``secret`` is the right whose hash ``meta`` keeps as ``which``."""
    expected = meta.get(which)
    return isinstance(expected, str) and hmac.compare_digest(expected, _hash(secret))


def _terms(meta: dict[str, Any]) -> dict[str, Any]:
    """What the client is told: the terms, never a right's hash."""
    terms: dict[str, Any] = {key: meta[key] for key in ("fetches", "expires_at", "bytes") if key in meta}
    return {**terms, "fetches_left": terms["fetches"], "pending": bool(meta.get("pending"))}
