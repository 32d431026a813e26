"""Deposits kept in the function's encrypted storage, found by the hash of their token.

A deposit is two objects: ``data/<id>`` (the bytes) and ``meta/<id>`` (JSON: fetches
left, expiry, size), where ``id`` is the SHA-256 of the 256-bit token. The token itself is
never stored: whoever reads the box's storage learns no token, and a fetch compares
hashes (a lookup by the hash; no secret is compared byte by byte). A deposit is deleted
(self-destructs) at its last allowed fetch, and once expired, by the next call that sees
it. A deposit may also be reserved first and filled later (Browser's deposit: the user
takes the capability and goes away while the page is fetched); until it is filled, a
fetch is told to come back and costs nothing. Storage has no transactions: two fetches
of one deposit at the same instant may both succeed once before the count reaches zero.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    class Store(Protocol):
        def put(self, key: str, value: bytes) -> None: ...
        def get(self, key: str, default: bytes | None = None) -> bytes | None: ...
        def delete(self, key: str) -> bool: ...
        def keys(self, prefix: str = "") -> list[str]: ...


TOKEN_BYTES = 32
MAX_FETCHES = 1000
MAX_SECONDS = 30 * 86400


class DepositError(Exception):
    """A request Dropbox refuses; the message says why, for the user."""


def token_id(token: str) -> str:
    try:
        raw = bytes.fromhex(token)
    except ValueError:
        raw = b""
    if len(raw) != TOKEN_BYTES:
        raise DepositError("that is not a Dropbox token (64 hexadecimal digits)")
    return hashlib.sha256(raw).hexdigest()


class Deposits:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def put(self, data: bytes, fetches: int, seconds: float) -> tuple[str, dict[str, Any]]:
        """Keep ``data``; returns the token (shown once, never stored) and the deposit's terms."""
        if not 1 <= fetches <= MAX_FETCHES:
            raise DepositError(f"fetches must be 1 to {MAX_FETCHES}")
        if not 1 <= seconds <= MAX_SECONDS:
            raise DepositError(f"the expiry must be 1 s to {MAX_SECONDS // 86400} days")
        self.sweep()
        token = secrets.token_bytes(TOKEN_BYTES).hex()
        ident = token_id(token)
        meta = {"fetches_left": fetches, "expires_at": self.clock() + seconds, "bytes": len(data)}
        self.store.put(f"data/{ident}", data)  # the data first: meta without data is never seen
        self.store.put(f"meta/{ident}", json.dumps(meta).encode())
        return token, meta

    def reserve(self, fetches: int, seconds: float) -> tuple[str, dict[str, Any]]:
        """A deposit with no data yet, filled later with :meth:`fill`; returns its token."""
        token, meta = self.put(b"", fetches, seconds)
        ident = token_id(token)
        meta["pending"] = True
        self.store.put(f"meta/{ident}", json.dumps(meta).encode())
        return token, meta

    def fill(self, token: str, data: bytes, error: str = "") -> dict[str, Any]:
        """Give a reserved deposit its data, or the reason there is none (``error``)."""
        ident = token_id(token)
        meta = self._meta(ident)
        if meta is None or not meta.get("pending") or meta["expires_at"] <= self.clock():
            raise DepositError("no reserved deposit for this token (filled already, or expired)")
        self.store.put(f"data/{ident}", data)
        meta.update(pending=False, bytes=len(data), error=error[:2000])
        self.store.put(f"meta/{ident}", json.dumps(meta).encode())
        return meta

    def take(self, token: str) -> tuple[bytes, dict[str, Any]]:
        """The deposit's bytes, counting one fetch; it self-destructs at its last one."""
        ident = token_id(token)
        meta = self._meta(ident)
        if meta is None or meta["expires_at"] <= self.clock():
            self._destroy(ident)
            raise DepositError("no deposit for this token (never made, fetched its last time, or expired)")
        if meta.get("pending"):  # costs no fetch: the depositor is still at work
            raise DepositError("nothing deposited yet: its depositor is still at work; try again later")
        data = self.store.get(f"data/{ident}")
        if meta.get("error"):
            self._destroy(ident)
            raise DepositError(f"the depositor failed and left no data: {meta['error']}")
        if data is None:
            self._destroy(ident)
            raise DepositError("no deposit for this token (its data is gone)")
        meta["fetches_left"] -= 1
        if meta["fetches_left"] <= 0:
            self._destroy(ident)
        else:
            self.store.put(f"meta/{ident}", json.dumps(meta).encode())
        return data, meta

    def sweep(self) -> int:
        """Delete every expired deposit; returns how many."""
        now, gone = self.clock(), 0
        for key in self.store.keys("meta/"):
            ident = key.removeprefix("meta/")
            meta = self._meta(ident)
            if meta is None or meta["expires_at"] <= now:
                self._destroy(ident)
                gone += 1
        return gone

    def _meta(self, ident: str) -> dict[str, Any] | None:
        raw = self.store.get(f"meta/{ident}")
        if raw is None:
            return None
        try:
            meta: dict[str, Any] = json.loads(raw)
        except ValueError:
            return None
        return meta

    def _destroy(self, ident: str) -> None:
        self.store.delete(f"data/{ident}")
        self.store.delete(f"meta/{ident}")
