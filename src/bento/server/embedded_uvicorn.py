"""Uvicorn inside the box's own event loop: for the API, the admin socket and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

log = logging.getLogger("bento.server")


class EmbeddedUvicorn(uvicorn.Server):
    """Uvicorn without its own signal handling: the daemon decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def serving(server: EmbeddedUvicorn, sockets: list[socket.socket]) -> AsyncIterator[None]:
    """Serve on ``sockets`` (bound and listening already) in a task this block owns.

    The sockets accept from the moment they listen: a client that connects before uvicorn
    has started waits in the backlog, so there is nothing to wait for here.
    """
    task = asyncio.create_task(server.serve(sockets=sockets))
    task.add_done_callback(_report)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait([task])


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (problem := task.exception()) is not None:
        log.error("an embedded HTTP server failed: %r", problem)
