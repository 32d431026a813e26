"""A Dropbox fetch refused because the function's storage transfers are all in use (four at
once) is asked again, backing off, until they free up or its patience ends; no refusal
spends a fetch. In an in-process box, its instances really sandboxed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from localbox import LocalBox

from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.dropbox import client as dropbox
from bento.server.broker.budgets import STORAGE_TRANSFERS, Hold

STORAGE = {"policy": {"storage": {"allowed": True, "max_mb": 64}}}
pytestmark = pytest.mark.timeout(120)


def _all_transfers_held(box: LocalBox, function_id: str) -> list[Hold]:
    """What four deposits or fetches in flight hold: every storage transfer of the function."""
    ledger = box.registry.functions[function_id].ledger
    assert ledger is not None
    return [ledger.take("storage_transfers") for _ in range(STORAGE_TRANSFERS)]


async def _refused_once(box: LocalBox, function_id: str, before: int) -> None:
    """Until the broker has refused the function a storage transfer (the operator's count)."""
    async with asyncio.timeout(30):
        while box.registry.ledger.function_refusals(function_id).get("budget-storage_transfers", 0) <= before:  # noqa: ASYNC110 (a count, no event)
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_a_fetch_waits_out_busy_storage_and_spends_one_fetch(box: LocalBox, tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    capability, _ = await dropbox.put(box.client, keyring, b"kept for later", fetches=1)
    held = _all_transfers_held(box, capability.function_id)
    fetching = asyncio.create_task(dropbox.get(box.client, capability, patience=60))
    try:
        await _refused_once(box, capability.function_id, 0)
        assert not fetching.done(), "a busy Dropbox is waited for, not an error"
    finally:
        for hold in held:
            hold.release()
    assert await fetching == b"kept for later"
    with pytest.raises(BentoError, match="no deposit"):  # it had one fetch, and that was it
        await dropbox.get(box.client, capability)


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_a_dropbox_busy_past_the_patience_is_a_clear_error_and_spends_nothing(
    box: LocalBox, tmp_path: Path
) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    capability, _ = await dropbox.put(box.client, keyring, b"still here", fetches=1)
    held = _all_transfers_held(box, capability.function_id)
    started = time.monotonic()
    try:
        with pytest.raises(
            BentoError, match="stayed busy for 1 s: its storage transfers were all in use"
        ) as busy:
            await dropbox.get(box.client, capability, patience=1.0)
    finally:
        for hold in held:
            hold.release()
    assert busy.value.fix == "try again later"
    assert box.registry.ledger.function_refusals(capability.function_id)["budget-storage_transfers"] >= 2
    assert time.monotonic() - started < 30
    assert await dropbox.get(box.client, capability) == b"still here", "the refusals spent no fetch"
