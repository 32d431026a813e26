"""Fixtures for unit tests: an in-process Bento box (see localbox.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from localbox import LocalBox, box_in_its_own_task


@pytest.fixture
def box_limits() -> dict[str, Any]:
    """ServerConfig settings for ``box``; parametrize to change them (``policy`` is a NodePolicy dict)."""
    return {}


@pytest.fixture
async def box(box_limits: dict[str, Any]) -> AsyncIterator[LocalBox]:
    """The real client against the app in process (localbox.py)."""
    async with box_in_its_own_task(**box_limits) as local:
        yield local
