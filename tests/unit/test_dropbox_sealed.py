"""Dropbox in an in-process box, its instances really sandboxed: what the box holds is sealed,
the recipient refuses a deposit the box swapped or forged, each right opens only its door,
and of eight fetches at once of a one-fetch deposit exactly one succeeds."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from localbox import LocalBox

from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions import deploy
from bento.functions.dropbox import client as dropbox
from bento.runtime import sealing
from bento.server.broker import budgets
from bento.server.broker.budgets import BudgetSpec, Ledger
from bento.server.store import FunctionStore, StorageChannel

STORAGE = {"policy": {"storage": {"allowed": True, "max_mb": 64}}}
SECRET = b"the launch codes are 0000, " * 100


def _store(box: LocalBox, capability: dropbox.Capability) -> FunctionStore:
    store = box.registry.store.existing(capability.function_id)
    assert store is not None
    return store


async def _read(store: FunctionStore, key: str) -> bytes:
    """An object as the box itself reads it: decrypted with the key of its own storage."""
    return await store.get(key, Ledger(BudgetSpec(threads=4)))


async def _write(store: FunctionStore, key: str, value: bytes) -> None:
    await store.put(key, value, store.reserve(key, len(value)), Ledger(BudgetSpec(threads=4)))


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_the_box_holds_ciphertext_and_a_swapped_deposit_is_refused(
    box: LocalBox, tmp_path: Path
) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    first, terms = await dropbox.put(box.client, keyring, SECRET, fetches=3)
    assert terms["bytes"] == len(SECRET) and terms["sealed_bytes"] == sealing.sealed_size(len(SECRET))
    other, _ = await dropbox.put(box.client, keyring, b"another user's deposit", fetches=3)
    store = _store(box, first)
    held = {key: await _read(store, key) for key in store.keys("")}
    assert {f"data/{first.deposit_id}", f"meta/{other.deposit_id}"} <= set(held)
    for needle in (
        SECRET[:27],
        first.key,
        sealing.encode_key(first.key).encode(),
        first.fetch_right.encode(),
    ):
        assert not any(
            needle in value or needle.decode(errors="ignore") in key for key, value in held.items()
        )
    assert not any(SECRET[:27] in p.read_bytes() for p in store.directory.rglob("*") if p.is_file())
    assert await dropbox.get(box.client, first) == SECRET

    # The box hands the first recipient the other deposit: its digest gives it away.
    await _write(store, f"data/{first.deposit_id}", held[f"data/{other.deposit_id}"])
    with pytest.raises(BentoError, match="SHA-256 differs"):
        await dropbox.get(box.client, first)
    # A box that also rewrites what the capability says (a reserved deposit binds no digest)
    # still cannot seal under a key it never saw.
    unbound = dataclasses.replace(other, digest=dropbox.UNBOUND)
    await _write(
        store, f"data/{other.deposit_id}", sealing.seal(sealing.new_key(), b"forged", dropbox.DEPOSIT)
    )
    with pytest.raises(BentoError, match="does not open under this capability's key"):
        await dropbox.get(box.client, unbound)


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_a_fetch_right_cannot_fill_and_a_fill_right_cannot_fetch(box: LocalBox, tmp_path: Path) -> None:
    function, _ = await deploy.ensure(
        box.client, Keyring(tmp_path / "k.json"), dropbox.code(), dropbox.manifest()
    )
    fill, capability, terms = await dropbox.reserve(box.client, function, fetches=1)
    assert terms["pending"] is True and capability.digest == dropbox.UNBOUND
    posing = dataclasses.replace(fill, fill_right=capability.fetch_right)  # the recipient fills first
    with pytest.raises(BentoError, match="no deposit for this id and right"):
        await dropbox.fill(box.client, posing, b"the recipient's own bytes")
    with pytest.raises(BentoError, match="still at work"):
        await dropbox.get(box.client, capability)
    assert (await dropbox.fill(box.client, fill, b"the page"))["bytes"] > len(b"the page")  # sealed
    spender = dataclasses.replace(capability, fetch_right=fill.fill_right)  # the depositor fetches
    with pytest.raises(BentoError, match="no deposit for this id and right"):
        await dropbox.get(box.client, spender)
    assert await dropbox.get(box.client, capability) == b"the page"  # its one fetch was left

    # A depositor that failed leaves its reason, sealed too: the box holds no URL in clear.
    fill, capability, _ = await dropbox.reserve(box.client, function, fetches=2)
    await dropbox.fill(box.client, fill, b"", error="cannot fetch http://secret.example/: HTTP 404")
    store = _store(box, capability)
    assert not any([b"secret.example" in await _read(store, key) for key in store.keys("")])
    with pytest.raises(
        BentoError, match=r"depositor failed and left no data: cannot fetch http://secret\.example/"
    ):
        await dropbox.get(box.client, capability)
    with pytest.raises(BentoError, match="no deposit for this id and right"):  # told once
        await dropbox.get(box.client, capability)


def together(count: int) -> Callable[[StorageChannel, str], Awaitable[tuple[int, socket.socket] | None]]:
    """``StorageChannel.get`` holding the box's answers to reads of a deposit's metadata until
    ``count`` instances have asked: so the fetches reach the deposit together, not one sandbox
    start apart (on a real box, recipients told at once, over Tor's latency, do the same)."""
    read, all_in, asked = StorageChannel.get, asyncio.Event(), [0]

    async def get(channel: StorageChannel, key: str) -> tuple[int, socket.socket] | None:
        if key.startswith("meta/"):
            asked[0] += 1
            if asked[0] >= count:
                all_in.set()
            async with asyncio.timeout(30):
                await all_in.wait()
        return await read(channel, key)

    return get


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_eight_fetches_at_once_of_a_one_fetch_deposit_give_exactly_one(
    box: LocalBox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight values in flight at once (the box's default is four): this is about the count.
    monkeypatch.setattr(budgets, "STORAGE_TRANSFERS", 8)
    capability, _ = await dropbox.put(box.client, Keyring(tmp_path / "k.json"), SECRET, fetches=1)
    monkeypatch.setattr(StorageChannel, "get", together(8))
    async with asyncio.timeout(60):
        results = await asyncio.gather(
            *(dropbox.get(box.client, capability) for _ in range(8)), return_exceptions=True
        )
    assert [r for r in results if not isinstance(r, BaseException)] == [SECRET], results
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, BentoError) and "no deposit for this id and right" in str(r) for r in refused), (
        refused
    )
    assert _store(box, capability).keys(f"claim/{capability.deposit_id}") == []  # nothing left behind
