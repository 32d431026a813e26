"""Fixtures for unit tests: an in-process Bento box (see localbox.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from localbox import LocalBox, local_registry, serving

from bento.server.api import create_app


@pytest.fixture
def box_limits() -> dict[str, Any]:
    """ServerConfig settings for ``box``; parametrize to change them (``policy`` is a NodePolicy dict)."""
    return {}


@pytest.fixture
async def box(box_limits: dict[str, Any]) -> AsyncIterator[LocalBox]:
    with local_registry(**box_limits) as (registry, signed):
        app = create_app(registry, lambda: signed)
        transport = httpx.ASGITransport(app=app)
        async with (
            serving(registry),
            httpx.AsyncClient(transport=transport, base_url="http://box", timeout=30) as client,
        ):
            yield LocalBox(registry, signed, client)
