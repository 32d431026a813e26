"""api.storage on a testnet box: shared by sessions, ciphertext on the operator's disk, shredded."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TIMEOUT, run

from bento.client.box import Box
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs
from bento.testnet import Node

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]

SOURCE = """
from bento.runtime import api

def save(key, value):
    api.storage.put(key, value)
    return api.storage.usage()

def load(key):
    value = api.storage.get(key)
    return None if value is None else value.decode()
"""
SECRET = "e2e secret: 7c0ffee-not-on-disk"


def _grep(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_storage_survives_sessions_is_encrypted_and_shredded(box: Box, box_node: Node) -> None:
    descriptor = await box.descriptor()
    assert descriptor.policy.storage.allowed and descriptor.runtime.storage is not None
    manifest = Manifest(name="storage", needs=Needs(storage_mb=1))
    deployment = await box.deploy(SOURCE.encode(), manifest)
    _, ended = await run(box, deployment, "save", "motto", SECRET)
    assert ended.state is SessionState.COMPLETED, ended.reason
    assert ended.result == {"used": len(SECRET) + len("motto"), "quota": 1 << 20, "objects": 1}
    _, ended = await run(box, deployment, "load", "motto")
    assert ended.result == SECRET

    assert box_node.bento_dir is not None
    state_dir = Path(box_node.bento_dir)
    storage_dir = state_dir / "storage" / deployment.function_id
    assert [p for p in storage_dir.iterdir()], "the value is on disk"
    assert not _grep(state_dir, SECRET.encode()), "the secret reached the operator's disk in clear"

    await box.shutdown(deployment)
    assert not storage_dir.exists(), "shutdown deletes the ciphertext"
