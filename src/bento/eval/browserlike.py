"""Plain Tor as a browser uses it: the page, then everything it references, in parallel.

The baseline of Table 1 and Table 2. Like a browser, it parses the page and its style
sheets and frames (with Browser's own discovery, so both fetch the same references), and
fetches up to six resources at a time per host name, through the client's SOCKS port,
with names resolved at the exit. What only scripts would request is not fetched: there is
no script engine here, as there is none in Browser's static mode either.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from bento.functions.browser.fetch import Resource, references

PER_HOST = 6  # parallel connections a browser opens to one host
MAX_RESOURCES = 500
MAX_DEPTH = 4


@dataclass(frozen=True)
class PlainPage:
    url: str
    resources: int
    failed: int
    bytes: int
    seconds: float


async def fetch(url: str, socks: str, *, isolation: str, per_request: float = 60.0) -> PlainPage:
    """Load ``url`` and its resources through the SOCKS proxy ``socks`` (host:port).

    ``isolation`` becomes the SOCKS user name: tor gives each new one its own circuit.
    """
    proxy = f"socks5h://{isolation}:x@{socks}"
    started = time.monotonic()
    seen: set[str] = {url}
    hosts: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(PER_HOST))
    done: list[Resource] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(proxy=proxy, timeout=per_request, limits=limits, follow_redirects=True) as client,
        asyncio.TaskGroup() as group,
    ):

        async def load(resource: Resource) -> None:
            async with hosts[urlsplit(resource.url).hostname or ""]:
                try:
                    response = await client.get(resource.url)
                    resource.final_url, resource.status = str(response.url), response.status_code
                    resource.content_type = response.headers.get("content-type", "")
                    resource.body = response.content
                    if response.status_code >= 400:
                        resource.error = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    resource.error = f"{type(exc).__name__}: {exc}"
            done.append(resource)
            if resource.depth >= MAX_DEPTH:
                return
            for reference, kind in references(resource):
                if reference not in seen and len(seen) <= MAX_RESOURCES:
                    seen.add(reference)
                    group.create_task(load(Resource(reference, kind, resource.depth + 1)))

        group.create_task(load(Resource(url, "frame")))
    page = next(r for r in done if r.url == url)
    if page.error:
        raise OSError(f"{url}: {page.error}")
    return PlainPage(
        url=url,
        resources=len(done) - 1,
        failed=sum(1 for r in done if r.error),
        bytes=sum(len(r.body) for r in done),
        seconds=time.monotonic() - started,
    )
