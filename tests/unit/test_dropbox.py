"""Dropbox's deposits (over an in-memory stand-in for api.storage, with a clock we move)."""

from __future__ import annotations

import hashlib

import pytest

from bento.errors import BentoError
from bento.functions.dropbox.client import Capability
from bento.functions.dropbox.deposits import DepositError, Deposits


class Memory:
    """The part of ``api.storage`` that Deposits uses, in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, value: bytes) -> None:
        self.objects[key] = bytes(value)

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        return self.objects.get(key, default)

    def delete(self, key: str) -> bool:
        return self.objects.pop(key, None) is not None

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_deposit_is_fetched_its_allowed_times_then_self_destructs() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    token, terms = deposits.put(b"secret page", fetches=2, seconds=60)
    assert len(bytes.fromhex(token)) == 32 and terms == {"fetches_left": 2, "expires_at": 1060.0, "bytes": 11}
    ident = hashlib.sha256(bytes.fromhex(token)).hexdigest()
    assert set(store.objects) == {f"data/{ident}", f"meta/{ident}"}
    assert not any(token in key or token.encode() in value for key, value in store.objects.items())
    assert deposits.take(token) == (b"secret page", {"fetches_left": 1, "expires_at": 1060.0, "bytes": 11})
    assert deposits.take(token)[0] == b"secret page"
    assert store.objects == {}  # the last fetch destroyed it
    with pytest.raises(DepositError, match="no deposit for this token"):
        deposits.take(token)


def test_expiry_destroys_and_wrong_tokens_find_nothing() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    token, _ = deposits.put(b"x", fetches=5, seconds=10)
    other, _ = deposits.put(b"y", fetches=5, seconds=100)
    with pytest.raises(DepositError, match="no deposit"):
        deposits.take("00" * 32)
    with pytest.raises(DepositError, match="not a Dropbox token"):
        deposits.take("not hex")
    clock.now += 10
    with pytest.raises(DepositError, match="expired"):
        deposits.take(token)
    assert len(store.objects) == 2  # only the other deposit is left
    clock.now += 90
    assert deposits.sweep() == 1 and store.objects == {}
    with pytest.raises(DepositError, match="fetches must be"):
        deposits.put(b"x", fetches=0, seconds=10)
    with pytest.raises(DepositError, match="expiry"):
        deposits.put(b"x", fetches=1, seconds=0)
    assert other


def test_capabilities_round_trip_and_refuse_garbage() -> None:
    capability = Capability("a" * 56, "f123", "inv_tok-en", "ab" * 32)
    assert Capability.parse(str(capability)) == capability
    assert "ab" * 32 not in repr(capability) and "inv_tok-en" not in repr(capability)
    for bad in (
        "",
        "bento-dropbox:x",
        f"other:{'a' * 56}:f:i:{'ab' * 32}",
        f"bento-dropbox:o:f:i:{'ab' * 31}",
    ):
        with pytest.raises(BentoError, match="not a Dropbox capability"):
            Capability.parse(bad)


def test_a_reserved_deposit_waits_for_its_data_then_behaves_as_any() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    token, terms = deposits.reserve(fetches=1, seconds=60)
    assert terms["pending"] is True and terms["bytes"] == 0
    for _ in range(3):  # asking early costs no fetch
        with pytest.raises(DepositError, match="still at work"):
            deposits.take(token)
    assert deposits.fill(token, b"the padded page")["bytes"] == 15
    with pytest.raises(DepositError, match="no reserved deposit"):
        deposits.fill(token, b"again")  # filled once, never overwritten
    assert deposits.take(token)[0] == b"the padded page"
    assert store.objects == {}


def test_a_failed_depositor_leaves_its_reason_once_and_an_expired_reservation_is_swept() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    token, _ = deposits.reserve(fetches=3, seconds=60)
    deposits.fill(token, b"", error="cannot fetch http://x/: HTTP 404 Not Found")
    with pytest.raises(DepositError, match="the depositor failed and left no data: cannot fetch"):
        deposits.take(token)
    assert store.objects == {}
    late, _ = deposits.reserve(fetches=1, seconds=10)
    clock.now += 11
    with pytest.raises(DepositError, match="no reserved deposit"):
        deposits.fill(late, b"too late")
    assert deposits.sweep() == 1 and store.objects == {}
