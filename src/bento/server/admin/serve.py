"""The operator's view of a running box: its admin socket, and its metrics when asked for."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from bento.server.admin.metrics import metrics_endpoint
from bento.server.admin.socket_api import admin_socket
from bento.server.registry import Registry


@contextlib.asynccontextmanager
async def operator_view(
    registry: Registry, state_dir: Path, metrics: socket.socket | None
) -> AsyncIterator[None]:
    """Serve the admin socket (always) and the metrics (on ``metrics``, bound already) in this block."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(admin_socket(registry, state_dir))
        if metrics is not None:
            await stack.enter_async_context(metrics_endpoint(registry, metrics))
        yield
