"""Dropbox in an in-process box, its instances really sandboxed: what the box holds is sealed,
the recipient refuses a deposit the box swapped or forged, each right opens only its door,
and of eight fetches at once of a one-fetch deposit exactly one succeeds."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from localbox import LocalBox

from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions import deploy
from bento.functions.dropbox import client as dropbox
from bento.runtime import sealing
from bento.server.broker.budgets import BudgetSpec, Ledger
from bento.server.store import FunctionStore

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
    held = {key: await _read(store, key) for key in store.keys()}
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


async def _fetch_when_told(box: LocalBox, capability: dropbox.Capability, go: asyncio.Event) -> bytes:
    """One fetch whose instance is up and waiting for the right until ``go``: so the eight
    fetches reach the deposit together, not one sandbox start apart."""
    stream = await box.client.start(capability.deployment(), "get", [capability.deposit_id])
    async with stream:
        await go.wait()
        await stream.send(capability.fetch_right.encode())
        await stream.close_input()
        sealed = b"".join([chunk async for chunk in stream])
    assert stream.ended is not None
    if stream.ended.error is not None:
        raise BentoError(stream.ended.error.message)
    return sealing.unseal(capability.key, sealed, dropbox.DEPOSIT)


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_eight_fetches_at_once_of_a_one_fetch_deposit_give_exactly_one(
    box: LocalBox, tmp_path: Path
) -> None:
    capability, _ = await dropbox.put(box.client, Keyring(tmp_path / "k.json"), SECRET, fetches=1)
    go = asyncio.Event()
    fetches = [asyncio.create_task(_fetch_when_told(box, capability, go)) for _ in range(8)]
    async with asyncio.timeout(60):
        while len(box.registry.sessions) < 8 + 1 or not all(
            s.started.is_set() for s in box.registry.sessions.values()
        ):  # the put's session, and eight fetches' instances started
            await asyncio.sleep(0.05)
        go.set()
        results = await asyncio.gather(*fetches, return_exceptions=True)
    assert [r for r in results if not isinstance(r, BaseException)] == [SECRET], results
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, BentoError) and "no deposit for this id and right" in str(r) for r in refused), (
        refused
    )
    assert _store(box, capability).keys(f"claim/{capability.deposit_id}") == []  # nothing left behind
