"""Fixtures for unit tests: an in-process Bento box (see localbox.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from localbox import LocalBox, local_registry, serving


@pytest.fixture
def box_limits() -> dict[str, Any]:
    """ServerConfig settings for ``box``; parametrize to change them (``policy`` is a NodePolicy dict)."""
    return {}


@pytest.fixture
async def box(box_limits: dict[str, Any]) -> AsyncIterator[LocalBox]:
    """The real client against the app in process. The app and its WebSockets live in a task
    of their own: the client's transport must be left in the task that entered it."""
    ready: asyncio.Future[LocalBox] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def serve() -> None:
        with local_registry(**box_limits) as (registry, signed):
            async with registry.running(), serving(registry, signed) as local:
                ready.set_result(local)
                await done.wait()

    server = asyncio.create_task(serve())
    waiting = asyncio.ensure_future(ready)
    await asyncio.wait([server, waiting], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        waiting.cancel()
        await server  # it failed, or skipped: say why
    try:
        yield ready.result()
    finally:
        done.set()
        await server
