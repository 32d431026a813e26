"""api.storage from inside real sandboxed instances of an in-process box."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from localbox import LocalBox, Uploaded, upload_body

SOURCE = """
from bento.runtime import api

def save(key, value):
    api.storage.put(key, value)
    return api.storage.usage()

def load(key):
    value = api.storage.get(key)
    return None if value is None else value.decode()

def append(key, line):
    with api.storage.open(key, "ab") as f:
        f.write(line.encode())
    return [api.storage.keys(), api.storage.get(key).decode()]

def forget(key):
    return [api.storage.delete(key), api.storage.delete(key), api.storage.keys()]

def overfill(size):
    try:
        api.storage.put("big", bytes(size))
    except api.storage.StorageError as exc:
        return ["refused", str(exc), api.storage.usage()]
    return ["stored", api.storage.usage()]
"""

SECRET = "correct horse battery staple"
STORAGE = {"policy": {"storage": {"allowed": True, "max_mb": 2}}}


async def _call(box: LocalBox, function: Uploaded, entry: str, *args: Any) -> Any:
    session_id = await box.invoke(function, entry, *args)
    info = await box.wait_state(function, session_id, timeout=30)
    assert info["state"] == "completed", info["reason"]
    return box.registry.sessions[session_id].result


def _grep(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_storage_is_shared_by_sessions_encrypted_and_shredded(box: LocalBox) -> None:
    function = await box.upload(SOURCE, needs={"storage_mb": 1})
    usage = await _call(box, function, "save", "motto", SECRET)
    assert usage == {"used": len(SECRET) + len("motto"), "quota": 1 << 20, "objects": 1}
    assert await _call(box, function, "load", "motto") == SECRET, "a later session sees the value"
    assert await _call(box, function, "load", "nothing") is None
    assert await _call(box, function, "append", "log", "one\n") == [["log", "motto"], "one\n"]
    assert await _call(box, function, "append", "log", "two\n") == [["log", "motto"], "one\ntwo\n"]

    state_dir = box.registry.config.state_dir
    storage_dir = state_dir / "storage" / function.function_id
    assert len([p for p in storage_dir.iterdir()]) == 2
    assert not _grep(state_dir, SECRET.encode()), "the secret reached the operator's disk in clear"
    assert not _grep(state_dir, b"motto"), "a key name reached the operator's disk"

    assert await _call(box, function, "forget", "log") == [True, False, ["motto"]]
    stopped = await box.http.delete(f"/v1/functions/{function.function_id}", headers=function.shutdown_auth)
    assert stopped.status_code == 200
    assert not storage_dir.exists(), "shutdown deletes the ciphertext"


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_quota_is_enforced_with_a_clear_error(box: LocalBox) -> None:
    function = await box.upload(SOURCE, needs={"storage_mb": 1})
    refused, message, usage = await _call(box, function, "overfill", (1 << 20) + 1)
    assert refused == "refused"
    assert "storage quota exceeded" in message and "needs.storage_mb" in message
    assert usage["used"] == 0 and usage["objects"] == 0
    stored, usage = await _call(box, function, "overfill", 1000)
    assert stored == "stored" and usage["objects"] == 1


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_functions_do_not_see_each_others_storage(box: LocalBox) -> None:
    one = await box.upload(SOURCE, needs={"storage_mb": 1})
    two = await box.upload(SOURCE, needs={"storage_mb": 1})
    await _call(box, one, "save", "k", "one's value")
    assert await _call(box, two, "load", "k") is None


async def test_a_function_without_storage_in_its_manifest_is_refused(box: LocalBox) -> None:
    function = await box.upload(SOURCE)
    session_id = await box.invoke(function, "save", "k", "v")
    info = await box.wait_state(function, session_id, timeout=30)
    assert info["state"] == "error"
    assert "StorageError" in info["reason"] and "needs.storage_mb" in info["reason"]


async def test_a_manifest_asking_for_storage_the_box_does_not_offer_is_refused(box: LocalBox) -> None:
    response = await box.http.post("/v1/functions", json=upload_body(SOURCE, needs={"storage_mb": 1}))
    assert response.status_code == 403
    assert "storage_mb: the box allows no storage" in response.text


@pytest.mark.parametrize("box_limits", [STORAGE])
async def test_the_descriptor_says_what_storage_protects_against(box: LocalBox) -> None:
    response = await box.http.get("/v1/descriptor")
    offer = response.json()["descriptor"]["runtime"]["storage"]
    assert offer["cipher"].startswith("AES-256-GCM")
    assert "locked against swap: yes" in offer["keys"]
    assert any("operator" in item and "memory" in item for item in offer["does_not_protect_against"])
    assert any("SGX" in item for item in offer["does_not_protect_against"])


async def test_a_box_without_storage_offers_none_in_its_descriptor(box: LocalBox) -> None:
    response = await box.http.get("/v1/descriptor")
    assert response.json()["descriptor"]["runtime"]["storage"] is None
