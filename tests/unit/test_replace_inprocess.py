"""Replacing a function on its box (``deploy --replace``): its storage moves, or is shredded
only when asked; a refusal installs and shuts down nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from localbox import LocalBox, Uploaded

from bento.client import Deployment
from bento.errors import BentoError, Refused
from bento.protocol.errors import ErrorCode
from bento.protocol.manifest import Manifest

SOURCE = """
from bento.runtime import api

def save(key, value):
    api.storage.put(key, value)

def load(key):
    value = api.storage.get(key)
    return None if value is None else value.decode()

def fill(key, size):
    api.storage.put(key, bytes(size))

def wait():
    api.recv()
"""

STORAGE = {"policy": {"storage": {"allowed": True, "max_mb": 2}}}


async def _call(box: LocalBox, function: Deployment, entry: str, *args: Any) -> Any:
    session_id = await box.invoke(function, entry, *args)
    info = await box.wait_state(function, session_id, timeout=30)
    assert info["state"] == "completed", info["reason"]
    return box.registry.sessions[session_id].result


async def _replace(box: LocalBox, old: Deployment, storage_mb: int, **options: Any) -> Any:
    manifest = Manifest.model_validate({"name": "test", "needs": {"storage_mb": storage_mb}})
    return await box.client.replace(old, SOURCE.encode(), manifest, **options)


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_a_replacing_function_takes_over_the_storage_and_the_old_one_stops(box: LocalBox) -> None:
    old = await box.upload(SOURCE, needs={"storage_mb": 1})
    await _call(box, old, "save", "counter", "41")
    waiting = await box.invoke(old, "wait")
    await box.wait_state(old, waiting, ended=False)

    new, replaced = await _replace(box, old, 2)

    assert replaced is not None and replaced.function_id == old.function_id
    assert (replaced.sessions_stopped, replaced.storage_objects) == (1, 1)
    assert replaced.storage_bytes == len("counter") + len("41")
    assert await _call(box, new, "load", "counter") == "41", "the new function reads the old one's storage"
    await _call(box, new, "fill", "more", (1 << 20) + 10)  # its own quota (2 MB) applies
    with pytest.raises(Refused) as gone:
        await box.invoke(old, "load", "counter")
    assert gone.value.code == ErrorCode.UNKNOWN_FUNCTION


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_fresh_storage_shreds_the_old_function_s_storage(box: LocalBox) -> None:
    old = await box.upload(SOURCE, needs={"storage_mb": 1})
    await _call(box, old, "save", "counter", "41")
    storage = box.registry.config.state_dir / "storage" / old.function_id
    assert storage.is_dir()

    new, replaced = await _replace(box, old, 1, keep_storage=False)

    assert (replaced.storage_bytes, replaced.storage_objects) == (0, 0)
    assert await _call(box, new, "load", "counter") is None
    assert not storage.exists(), "the old function's ciphertext is deleted"


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_storage_that_would_not_fit_refuses_and_changes_nothing(box: LocalBox) -> None:
    old = await box.upload(SOURCE, needs={"storage_mb": 1})
    await _call(box, old, "save", "counter", "41")
    functions = set(box.registry.functions)

    with pytest.raises(Refused) as refused:
        await _replace(box, old, 0)

    assert refused.value.code == ErrorCode.STORAGE_TOO_SMALL
    assert "storage_mb = 1" in (refused.value.fix or "") and "--fresh-storage" in (refused.value.fix or "")
    assert set(box.registry.functions) == functions, "nothing was installed or shut down"
    assert await _call(box, old, "load", "counter") == "41"


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_a_wrong_shutdown_token_replaces_nothing(box: LocalBox) -> None:
    old: Uploaded = await box.upload(SOURCE, needs={"storage_mb": 1})
    forged = dataclasses.replace(old, shutdown_token=old.invocation_token)
    functions = set(box.registry.functions)

    with pytest.raises(Refused) as refused:
        await _replace(box, forged, 1)

    assert refused.value.code == ErrorCode.WRONG_TOKEN
    assert set(box.registry.functions) == functions


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_a_function_of_another_box_is_not_replaced_in_place(box: LocalBox) -> None:
    old = await box.upload(SOURCE, needs={"storage_mb": 1})
    elsewhere = dataclasses.replace(old, onion="b" * 56, relay_nickname="other")

    with pytest.raises(BentoError, match="storage does not move between boxes") as refused:
        await _replace(box, elsewhere, 1)

    assert "fresh storage" in (refused.value.fix or "")
    assert set(box.registry.functions) == {old.function_id}
