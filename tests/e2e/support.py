"""Helpers for the end-to-end tests: deploy a source string, run a session to its end, run
the ``bento`` command (the ``cli`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.protocol.manifest import Manifest
from bento.protocol.messages import Ended
from bento.testnet import Testnet

TIMEOUT = 180  # seconds for anything over the testnet

CLI = Callable[..., subprocess.CompletedProcess[str]]  # the ``cli`` fixture: ``bento ARGS [stdin=...]``


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """A command that succeeded; a failure shows what it said."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


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


async def bento_cli(testnet: Testnet, keyring: Path, *args: str) -> tuple[int, str, str]:
    """Run ``bento ARGS`` against the testnet with its own keyring: (status, stdout, stderr)."""
    env = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(keyring)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bento", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
