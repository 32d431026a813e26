"""Dropbox's deposits (over an in-memory stand-in for api.storage, with a clock we move)."""

from __future__ import annotations

import pytest

from bento.errors import BentoError
from bento.functions.dropbox.client import UNBOUND, Capability
from bento.functions.dropbox.deposits import DepositError, Deposits
from bento.runtime import sealing


class Memory:
    """The part of ``api.storage`` that Deposits uses, in a dict; ``fail_on`` makes the
    writes of keys with that prefix fail, as a box's full disk would."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail_on = "nothing"

    def put(self, key: str, value: bytes) -> None:
        if key.startswith(self.fail_on):
            raise OSError("the box could not write the value")
        self.objects[key] = bytes(value)

    def create(self, key: str, value: bytes = b"") -> bool:
        if key in self.objects:
            return False
        self.put(key, value)
        return True

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        return self.objects.get(key, default)

    def delete(self, key: str) -> bool:
        return self.objects.pop(key, None) is not None

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def used(self) -> int:
        return sum(len(k) + len(v) for k, v in self.objects.items())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_deposit_is_fetched_its_allowed_times_then_self_destructs() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    ident, fetch, terms = deposits.put(b"sealed bytes", fetches=2, seconds=60)
    assert len(ident) == 32 and len(bytes.fromhex(fetch)) == 32
    assert terms == {"fetches": 2, "expires_at": 1060.0, "bytes": 12, "fetches_left": 2, "pending": False}
    assert set(store.objects) == {f"data/{ident}", f"meta/{ident}"}
    assert not any(fetch in key or fetch.encode() in value for key, value in store.objects.items())
    data, left = deposits.take(ident, fetch)
    assert data == b"sealed bytes" and left["fetches_left"] == 1 and f"claim/{ident}/0" in store.objects
    assert deposits.take(ident, fetch)[1]["fetches_left"] == 0
    assert store.objects == {}  # the last fetch destroyed it, claims and all
    with pytest.raises(DepositError, match="no deposit for this id and right"):
        deposits.take(ident, fetch)


def test_expiry_destroys_and_wrong_rights_find_nothing() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    ident, fetch, _ = deposits.put(b"x", fetches=5, seconds=10)
    deposits.put(b"y", fetches=5, seconds=100)
    with pytest.raises(DepositError, match="no deposit for this id and right"):
        deposits.take(ident, "00" * 32)  # the right id, a wrong right: told what a missing one is
    with pytest.raises(DepositError, match="not a Dropbox right"):
        deposits.take(ident, "not hex")
    with pytest.raises(DepositError, match="not a deposit id"):
        deposits.take("../meta", fetch)
    clock.now += 10
    with pytest.raises(DepositError, match="no deposit"):
        deposits.take(ident, fetch)
    assert len(store.objects) == 2  # only the other deposit is left
    clock.now += 90
    assert deposits.sweep() == 1 and store.objects == {}
    with pytest.raises(DepositError, match="fetches must be"):
        deposits.put(b"x", fetches=0, seconds=10)
    with pytest.raises(DepositError, match="expiry"):
        deposits.put(b"x", fetches=1, seconds=0)


def test_a_fetch_right_cannot_fill_and_a_fill_right_cannot_fetch() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    ident, fill, fetch, terms = deposits.reserve(fetches=1, seconds=60)
    assert fill != fetch and terms["pending"] is True
    assert not any(s in key or s.encode() in v for s in (fill, fetch) for key, v in store.objects.items())
    with pytest.raises(DepositError, match="no deposit for this id and right"):
        deposits.fill(ident, fetch, b"the recipient fills it first")
    for _ in range(3):  # asking early costs no fetch
        with pytest.raises(DepositError, match="still at work"):
            deposits.take(ident, fetch)
    assert deposits.fill(ident, fill, b"the padded page")["bytes"] == 15
    with pytest.raises(DepositError, match="not waiting for its data"):
        deposits.fill(ident, fill, b"again")  # filled once, never overwritten
    with pytest.raises(DepositError, match="no deposit for this id and right"):
        deposits.take(ident, fill)  # the depositor cannot spend the recipient's fetch
    assert deposits.take(ident, fetch)[0] == b"the padded page"
    assert store.objects == {}


def test_a_failed_depositor_leaves_its_reason_once_and_an_expired_reservation_is_swept() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    ident, fill, fetch, _ = deposits.reserve(fetches=3, seconds=60)
    deposits.fill(ident, fill, b"sealed reason", failed=True)
    data, terms = deposits.take(ident, fetch)
    assert data == b"sealed reason" and terms["failed"] is True
    assert store.objects == {}  # told once
    late, late_fill, _, _ = deposits.reserve(fetches=1, seconds=10)
    clock.now += 11
    with pytest.raises(DepositError, match="not waiting for its data"):
        deposits.fill(late, late_fill, b"too late")
    assert deposits.sweep() == 1 and store.objects == {}


def test_a_failed_deposit_frees_its_quota_and_the_sweep_removes_orphans() -> None:
    store, clock = Memory(), Clock()
    deposits = Deposits(store, clock)
    kept_id, kept_fetch, _ = deposits.put(b"kept", fetches=2, seconds=3600)
    before = store.used()
    store.fail_on = "data/"  # the data's write fails: nothing of the deposit is left
    with pytest.raises(OSError):
        deposits.put(b"x" * 5000, fetches=1, seconds=60)
    assert store.used() == before
    store.fail_on = "nothing"
    ident, fill, _, _ = deposits.reserve(fetches=1, seconds=60)
    reserved = store.used()
    store.fail_on = "meta/"  # the fill's data landed, its metadata did not: the data goes
    with pytest.raises(OSError):
        deposits.fill(ident, fill, b"y" * 5000)
    store.fail_on = "nothing"
    assert store.used() == reserved and deposits.fill(ident, fill, b"y")["bytes"] == 1  # fillable again
    # What dies between two writes leaves orphans: data with no metadata, a put that never
    # landed its data, a claim made after its deposit went. The sweep removes them all.
    dying, _, _ = deposits.put(b"w" * 5000, fetches=1, seconds=3600)
    store.objects["data/" + "ab" * 16] = b"z" * 5000
    store.objects["claim/" + "cd" * 16 + "/0"] = b""
    store.objects[f"meta/{dying}"] = store.objects[f"meta/{dying}"].replace(
        b'"bytes"', b'"writing_until": 1500, "bytes"'
    )
    clock.now += 600  # past the put's time to land its data, not past the deposit's expiry
    assert deposits.sweep() == 4  # the reservation expired, too
    assert set(store.objects) == {f"data/{kept_id}", f"meta/{kept_id}"}
    assert deposits.take(kept_id, kept_fetch)[0] == b"kept"


def test_capabilities_round_trip_and_refuse_garbage() -> None:
    key = sealing.new_key()
    capability = Capability("a" * 56, "f123", "inv_tok-en", "12" * 16, "ab" * 32, key, "cd" * 32)
    assert Capability.parse(str(capability)) == capability
    reserved = Capability("a" * 56, "f123", "inv_tok-en", "12" * 16, "ab" * 32, key, UNBOUND)
    assert Capability.parse(str(reserved)) == reserved
    assert not any(s in repr(capability) for s in ("ab" * 32, "inv_tok-en", sealing.encode_key(key)))
    good = str(capability)
    for bad in (
        "",
        "bento-dropbox:x",
        good.replace("bento-dropbox", "other"),
        good.replace("ab" * 32, "ab" * 31),  # a short right
        good.replace(sealing.encode_key(key), "k" * 42),  # not a key
        good.replace("cd" * 32, "zz" * 32),  # not a digest
        good.rsplit(":", 1)[0],  # no digest
    ):
        with pytest.raises(BentoError, match="not a Dropbox capability"):
            Capability.parse(bad)
