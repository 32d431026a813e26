"""Browser's chromium engine: the page as a headless Chromium builds it, scripts and all.

The static engine (``fetch.crawl``) reads references out of HTML and CSS, so it misses
what only a running script asks for. Here Debian's chromium loads the page, driven by
Playwright, and *every* request it makes is intercepted (``route``) and answered by
Browser's own :class:`~.fetch.Fetcher`: chromium itself never touches the network, so each
connection still goes through the broker and the relay's exit policy, and the same time,
size and count limits hold. What is kept:

- the page as rendered once the network settled, with its scripts removed (the DOM is
  already what they made, and run again offline they would fetch what is not there or add
  what is already shown); frames likewise. The client then makes this snapshot inert
  under the same rules as the static engine's copy (``inert``);
- every response chromium asked for, including those of ``fetch()``/XHR, style sheets'
  fonts and images, and then what the rendered documents name that chromium did not ask
  for (``fetch.complete``); ``rewrite.localize`` then points the page at its copies.

It needs the box's ``chromium`` syscall profile (the manifest asks for it; see
bento.sandbox.spec for what that sandbox looks like) and the ``playwright`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from . import discover, fetch
from .discover import FRAME, RESOURCE, STYLESHEET

# Debian's chromium binary, under /usr and so inside every sandbox (bento.sandbox.spec
# names the same path; /usr/bin/chromium is a wrapper that reads /etc/chromium.d).
CHROMIUM = "/usr/lib/chromium/chromium"
ARGUMENTS = [
    "--no-sandbox",  # the box's sandbox holds it; chromium's own needs namespaces it may not make
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # /tmp, which is the instance's own scratch
]
# After "load", up to this long for the network to settle (Playwright's "networkidle": no
# request for 500 ms); a page that polls for ever is taken as it is then.
SETTLE_AT_MOST = 10.0
_KINDS = {"document": FRAME, "stylesheet": STYLESHEET}
_FETCHED = ("GET", "HEAD")


class RenderError(Exception):
    """Chromium could not render the page; the message says why."""


def render(url: str, limits: fetch.Limits, user_agent: str, cookies: dict[str, str]) -> list[fetch.Resource]:
    """The rendered page (first), every resource chromium asked for, and what the rendered
    documents' HTML and CSS name besides (images below the fold that load lazily, ``srcset``
    candidates for other screens, fonts no text used yet), as the static engine would fetch
    them: the copy opens whole offline. Raises PageError if the page itself cannot be
    fetched, RenderError if chromium fails."""
    fetcher = fetch.Fetcher(limits, user_agent, cookies, url)
    deadline = time.monotonic() + limits.deadline
    try:
        rendered = asyncio.run(_render(url, fetcher, deadline))
    except (fetch.PageError, RenderError):
        raise
    except Exception as exc:  # Playwright's or chromium's own failure, said as this engine's
        raise RenderError(f"{type(exc).__name__}: {exc}") from None
    return fetch.complete(fetcher, rendered, deadline)


async def _render(url: str, fetcher: fetch.Fetcher, deadline: float) -> list[fetch.Resource]:
    try:
        from playwright.async_api import Error, Route, async_playwright
    except ImportError:
        raise RenderError("this box does not offer Playwright, which the chromium engine needs") from None
    limits = fetcher.limits
    fetched: dict[str, asyncio.Task[fetch.Resource]] = {}
    gate = asyncio.Semaphore(limits.concurrency)

    async def get(resource: fetch.Resource) -> fetch.Resource:
        async with gate:
            return await asyncio.to_thread(fetcher.fetch, resource)

    async def answer(route: Route) -> None:
        request = route.request
        if request.method not in _FETCHED or not request.url.startswith(("http://", "https://")):
            await route.abort("blockedbyclient")  # Browser only reads the web: no POST from scripts
            return
        task = fetched.get(request.url)
        if task is None:
            resource = fetch.Resource(request.url, _KINDS.get(request.resource_type, RESOURCE))
            if len(fetched) > limits.max_resources:
                resource.error = f"not fetched: the page has more than {limits.max_resources} resources"
            elif time.monotonic() > deadline:
                resource.error = f"not fetched: the page's limit of {limits.deadline:g} s ran out"
            # Listed in the page's index either way, as the static engine lists what it skipped.
            task = fetched[request.url] = asyncio.create_task(
                _given(resource) if resource.error else get(resource)
            )
        resource = await task
        if resource.final_url and resource.final_url != request.url and not resource.error:
            # Said as a redirect, so that chromium resolves the page's references as the web
            # would; its request for the final URL is answered from this same fetch.
            fetched.setdefault(resource.final_url, task)
            await route.fulfill(status=302, headers={"Location": resource.final_url})
            return
        if resource.error and not resource.status:
            await route.abort("failed")
            return
        headers = {"Content-Type": resource.content_type} if resource.content_type else {}
        await route.fulfill(status=resource.status or 200, headers=headers, body=resource.body)

    async with async_playwright() as playwright:
        try:
            chromium = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=ARGUMENTS, timeout=30_000
            )
        except Error as exc:
            raise RenderError(f"chromium did not start: {str(exc).splitlines()[0]}") from None
        try:
            context = await chromium.new_context(user_agent=fetcher.user_agent, service_workers="block")
            await context.route("**/*", answer)
            page = await context.new_page()
            try:
                await _load(page, url, deadline, Error)
            except RenderError:  # chromium's "ERR_HTTP_RESPONSE_CODE_FAILURE" is a 404 to the user
                first = fetched.get(url)
                if first is not None and first.done() and not first.cancelled() and first.result().error:
                    raise fetch.PageError(f"cannot fetch {url}: {first.result().error}") from None
                raise
            documents = await _documents(page, Error)
        finally:
            await chromium.close()
            for task in fetched.values():
                task.cancel()
    return _collect(url, fetched, documents)


async def _given(resource: fetch.Resource) -> fetch.Resource:
    return resource


async def _load(page: Any, url: str, deadline: float, error: type[Exception]) -> None:
    """Navigate, wait for "load", then for the network to settle, within the page's deadline."""
    try:
        await page.goto(url, wait_until="load", timeout=max(1.0, deadline - time.monotonic()) * 1000)
    except error as exc:
        if "Timeout" not in type(exc).__name__:
            raise RenderError(f"chromium could not load {url}: {str(exc).splitlines()[0]}") from None
        return  # the deadline: keep what was built so far
    settle = min(SETTLE_AT_MOST, max(0.0, deadline - time.monotonic()))
    with contextlib.suppress(error):
        await page.wait_for_load_state("networkidle", timeout=max(1.0, settle * 1000))


async def _documents(page: Any, error: type[Exception]) -> dict[str, str]:
    """The rendered HTML of the page and each of its frames, by URL (the page's first)."""
    found: dict[str, str] = {}
    for frame in page.frames:  # the main frame first, then every frame at any depth
        if frame.url.startswith(("http://", "https://")) and frame.url not in found:
            # A frame that navigated away or crashed (Playwright's ``error``: detached, its context
            # destroyed) keeps the bytes that were fetched for it; anything else is a bug, and
            # render() reports it as a RenderError.
            with contextlib.suppress(error):
                found[frame.url] = await frame.content()
    return found


def _collect(
    url: str, fetched: dict[str, asyncio.Task[fetch.Resource]], documents: dict[str, str]
) -> list[fetch.Resource]:
    resources: dict[str, fetch.Resource] = {}
    for task in fetched.values():
        if task.done() and not task.cancelled() and task.exception() is None:
            resource = task.result()
            resources.setdefault(resource.url, resource)
    page = resources.pop(url, None)
    if page is None or page.error:
        raise fetch.PageError(f"cannot fetch {url}: {page.error if page else 'chromium did not ask for it'}")
    for resource in [page, *resources.values()]:
        rendered = documents.get(resource.final_url or resource.url)
        if rendered is not None and resource.is_html:
            resource.body = discover.without_scripts(rendered).encode()
            resource.content_type = "text/html; charset=utf-8"
            resource._text = None  # its base is found by fetch.complete, as for the static engine
    return [page, *resources.values()]
