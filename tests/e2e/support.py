"""Helpers for the end-to-end tests: deploy a source string, run a session to its end."""

from __future__ import annotations

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.protocol.manifest import Manifest
from bento.protocol.messages import Ended

TIMEOUT = 180  # seconds for anything over the testnet


async def deploy(box: Box, source: str, name: str) -> Deployment:
    return await box.deploy(source.encode(), Manifest(name=name))


async def run(box: Box, deployment: Deployment, entry: str, *args: object) -> tuple[bytes, Ended]:
    """Invoke, attach, read every byte until the session ends."""
    session_id = await box.invoke(deployment, entry, list(args))
    return await drain(box, deployment, session_id)


async def drain(box: Box, deployment: Deployment, session_id: str) -> tuple[bytes, Ended]:
    output = bytearray()
    async with await box.attach(deployment, session_id) as stream:
        async for chunk in stream:
            output += chunk
    assert stream.ended is not None
    return bytes(output), stream.ended
