"""Opening a page in Debian's Chromium (Playwright) with the network cut, for the Browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


async def open_offline(page: Path) -> tuple[list[str], list[str], list[tuple[str, Any]], dict[str, Any]]:
    """Open ``page`` in Chromium with the network cut; every request, and those that would leave."""
    from playwright.async_api import Route, async_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (scripts/bootstrap.sh installs it)")
    requests: list[str] = []
    leaks: list[str] = []
    failed: list[tuple[str, Any]] = []

    async def cut(route: Route) -> None:
        if route.request.url.startswith("file://"):
            await route.continue_()
        else:
            leaks.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            context = await chromium.new_context(offline=True)
            await context.route("**/*", cut)
            tab = await context.new_page()
            tab.on("request", lambda request: requests.append(request.url))
            tab.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
            await tab.goto(page.as_uri(), wait_until="load", timeout=60_000)
            await tab.evaluate("document.fonts.ready")
            state = await tab.evaluate(
                """() => ({
                    script: document.documentElement.dataset.script,
                    images: [...document.images].map(i => [i.id, i.naturalWidth]),
                })"""
            )
            # A file: page's frame is another origin to it: ask the frame itself.
            frames = [f for f in tab.frames if f is not tab.main_frame]
            if frames and await frames[0].evaluate("!!document.getElementById('in-frame')"):
                state["frame_image"] = await frames[0].evaluate(
                    "document.getElementById('in-frame').naturalWidth"
                )
        finally:
            await chromium.close()
    return requests, leaks, failed, state
