"""Debian's Chromium, driven by Playwright, watching every request a page makes.

Nothing is cut: a request that would leave is let through to the real server (whose own
access log then shows it too) and recorded, so a test sees each way out that works.
Three witnesses: the context's ``request`` events (every frame, workers too), a catch-all
``route`` (every request the network stack would make), and ``websocket`` events (a
WebSocket goes through neither).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGUMENTS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


@dataclass
class Watched:
    requests: list[str] = field(default_factory=list)  # every request, as the page made it
    routed: list[str] = field(default_factory=list)  # every request that reached the route
    websockets: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [*self.requests, *self.routed, *self.websockets]

    def outside(self, allowed: Callable[[str], bool]) -> list[str]:
        return sorted({url for url in self.all() if not allowed(url)})


@contextlib.asynccontextmanager
async def watching() -> AsyncIterator[tuple[Any, Watched]]:
    """A new tab in a fresh headless Chromium, and the record of what it asks for."""
    from playwright.async_api import Route, async_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (scripts/bootstrap.sh installs it)")
    watched = Watched()

    async def catch_all(route: Route) -> None:
        watched.routed.append(route.request.url)
        await route.continue_()

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGUMENTS)
        try:
            context = await chromium.new_context(service_workers="block")
            await context.route("**/*", catch_all)
            context.on("request", lambda request: watched.requests.append(request.url))
            tab = await context.new_page()
            tab.on("websocket", lambda socket: watched.websockets.append(socket.url))
            yield tab, watched
        finally:
            await chromium.close()


async def settle(tab: Any, action: Callable[[], Awaitable[Any]]) -> None:
    """Do ``action`` (a navigation), then wait until the page's network is quiet (nothing
    for 500 ms: Playwright's "networkidle"), so what its scripts start is seen."""
    from playwright.async_api import Error

    with contextlib.suppress(Error):  # a page that navigates itself away mid-load
        await action()
    with contextlib.suppress(Error):
        await tab.wait_for_load_state("networkidle", timeout=15_000)


async def navigate(tab: Any, action: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> None:
    """Do ``action`` and wait until the tab's own document has changed and loaded (a page
    that is fetched through Browser first takes its time: ``timeout``)."""
    async with tab.expect_navigation(wait_until="load", timeout=timeout * 1000):
        await action()
