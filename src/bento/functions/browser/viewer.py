"""The viewer: browse the web through Browser from a page on 127.0.0.1, as a Tor user would.

Each navigation (an address typed, a link followed, a GET form sent) is one Browser fetch
at the chosen box, padded as the user asked; the page is shown from its archive, held in
memory, in a frame that may run no script (``sandbox`` without ``allow-scripts``) under a
Content-Security-Policy that lets it load only its own files, from here. Its links and
GET forms lead back to the viewer, which fetches the next page through Browser; nothing
else it holds can make the browser ask anything of anyone. Back, forward and the history
live in this process's memory only; cookies go with a site's requests only once the user
has allowed them for that site.

Another user of this machine could reach 127.0.0.1 too: every address of the viewer
starts with a random secret of this run (``Viewer.address``), without which it answers
404, and a request that names any other host (DNS rebinding) is refused.

>>> viewer = Viewer(fetch=None, port=8080)  # doctest: +SKIP
>>> viewer.address  # doctest: +SKIP
'http://127.0.0.1:8080/3q2-.../'
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bento.errors import BentoError, teardown

from . import saved, viewer_page, wire
from .inert import Links
from .saved import SavedCopy

# (url, the site's cookies the user allows, what its links become) -> the copy and the figures
Fetch = Callable[[str, dict[str, str], Links], Awaitable[tuple[SavedCopy, dict[str, Any]]]]
HOST = "127.0.0.1"
MAX_URL = 4096
MAX_PAGES_HELD = 30  # copies kept in memory; an older entry keeps its address and is fetched again
MAX_ENTRIES = 1000
MAX_FORM_BODY = 16 << 10


@dataclass
class Entry:
    """One page of the history: where it came from (``previous``: back), what it holds."""

    number: int
    url: str
    previous: int | None
    copy: SavedCopy | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    forms: list[str] = field(default_factory=list)  # the GET forms' actions, by their index


class Viewer:
    def __init__(self, fetch: Fetch, port: int, describe: str = "") -> None:
        self.fetch = fetch
        self.port = port
        self.describe = describe  # how pages are fetched, in words ("Browser on exit0, padded to 1 MB")
        self.secret = secrets.token_urlsafe(32)
        self.entries: dict[int, Entry] = {}
        self.cookies: dict[str, dict[str, str]] = {}  # host -> the cookies the user allows it
        self.navigating = asyncio.Lock()  # one fetch at a time: a page's padding ends before the next asks
        self.app = Starlette(routes=self._routes(), exception_handlers={_NotHere: _not_here})

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        """The viewer's address: give it to a browser; it is this run's only key."""
        return f"{self.origin}/{self.secret}/"

    def _routes(self) -> list[Route]:
        return [
            Route("/{secret}/", self._home),
            Route("/{secret}/go", self._go),
            Route("/{secret}/view/{number:int}", self._view),
            Route("/{secret}/form/{number:int}/{index:int}", self._form),
            Route("/{secret}/page/{number:int}/{path:path}", self._file),
            Route("/{secret}/refused/{number:int}", self._refused),
            Route("/{secret}/history", self._history),
            Route("/{secret}/cookies", self._allow_cookies, methods=["POST"]),
        ]

    # --- the pages ----------------------------------------------------------------------

    async def _home(self, request: Request) -> Response:
        self._admit(request)
        latest = max(self.entries, default=None)
        if latest is not None:
            return RedirectResponse(self._at(f"view/{latest}"), status_code=303)
        return self._html(viewer_page.render(self, None, back=None, forward=None))

    async def _go(self, request: Request) -> Response:
        self._admit(request)
        url = request.query_params.get("url", "").strip()
        previous = _number(request.query_params.get("from"))
        return await self._navigate(url, previous if previous in self.entries else None)

    async def _form(self, request: Request) -> Response:
        """A GET form of a page: its action with the fields as the query, as a browser sends it."""
        self._admit(request)
        entry = self._entry(request)
        index = int(request.path_params["index"])
        if not 0 <= index < len(entry.forms):
            return self._html(viewer_page.problem("that form is not on this page"), status=404)
        action = urlsplit(entry.forms[index])
        url = action._replace(query=request.url.query, fragment="").geturl()
        return await self._navigate(url, entry.number)

    async def _refused(self, request: Request) -> Response:
        """Where a form that would send (POST) lands: Browser only fetches, so nothing was sent."""
        self._admit(request)
        entry = self._entry(request)
        message = (
            "This form would send data to the site (a POST); Browser only fetches pages, so it was not sent."
        )
        return self._html(viewer_page.problem(message, back=self._at(f"view/{entry.number}")), status=200)

    async def _history(self, request: Request) -> Response:
        self._admit(request)
        return self._html(viewer_page.history(self, self.history()))

    def history(self) -> list[dict[str, Any]]:
        """Every page of this run, in the order they were asked for (memory only)."""
        return [
            {"number": e.number, "url": e.url, "error": e.error or None, "held": e.copy is not None}
            for e in sorted(self.entries.values(), key=lambda e: e.number)
        ]

    async def _view(self, request: Request) -> Response:
        self._admit(request)
        entry = self._entry(request)
        return self._html(viewer_page.render(self, entry, back=entry.previous, forward=self._forward(entry)))

    async def _file(self, request: Request) -> Response:
        """A file of a page's copy, from memory, under the page's policy."""
        self._admit(request)
        entry = self._entry(request)
        path = str(request.path_params["path"])
        data = entry.copy.files.get(path) if entry.copy is not None else None
        if data is None or path == "bento-page.json":
            return Response(b"not in this page's copy\n", status_code=404, media_type="text/plain")
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("image/svg+xml", "application/javascript"):
            kind += "; charset=utf-8"
        headers = {
            "Content-Security-Policy": self.page_policy(entry.number) + f"; sandbox {viewer_page.SANDBOX}",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        return Response(data, media_type=kind, headers=headers)

    async def _allow_cookies(self, request: Request) -> Response:
        """The user allows cookies (``NAME=VALUE; ...``, empty to forget them) for one site."""
        self._admit(request)
        body = await _bounded_body(request)
        fields = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        host, back = fields.get("host", "").lower(), _number(fields.get("back"))
        cookies: dict[str, str] = {}
        for pair in fields.get("cookies", "").split(";"):
            name, _, value = pair.strip().partition("=")
            if name.strip():
                cookies[name.strip()] = value.strip()
        problem = wire.cookie_problem(cookies) or ("" if host else "no site named")
        if problem:
            return self._html(viewer_page.problem(f"cookies not kept: {problem}"), status=400)
        if cookies:
            self.cookies[host] = cookies
        else:
            self.cookies.pop(host, None)
        return RedirectResponse(self._at(f"view/{back}" if back in self.entries else ""), status_code=303)

    # --- navigation ---------------------------------------------------------------------

    async def _navigate(self, url: str, previous: int | None) -> Response:
        parts = urlsplit(url)
        if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
            page = viewer_page.problem(f"{url[:200]!r} is not an http:// or https:// address")
            return self._html(page, status=400)
        async with self.navigating:
            if len(self.entries) >= MAX_ENTRIES:
                del self.entries[min(self.entries)]
            number = max(self.entries, default=0) + 1
            entry = self.entries[number] = Entry(number, url, previous)
            cookies = self.cookies.get(parts.hostname.lower(), {})
            try:
                entry.copy, entry.figures = await self.fetch(url, cookies, self.links(entry))
            except BentoError as exc:
                entry.error = str(exc)
            self._forget_old_copies()
        return RedirectResponse(self._at(f"view/{number}"), status_code=303)

    async def add(self, url: str, archive: bytes, figures: dict[str, Any]) -> Entry:
        """A page already fetched (its archive, as Browser sent it) as the next entry."""
        number = max(self.entries, default=0) + 1
        entry = self.entries[number] = Entry(number, url, previous=None, figures=figures)
        entry.copy = await asyncio.to_thread(saved.read_archive, archive, self.links(entry))
        return entry

    def links(self, entry: Entry) -> Links:
        """What the links and GET forms of ``entry``'s page become: the viewer's own addresses."""

        def follow(url: str) -> str:
            return self._at("go?" + urlencode({"from": entry.number, "url": url}))

        def submit(url: str) -> str:
            entry.forms.append(url)
            return self._at(f"form/{entry.number}/{len(entry.forms) - 1}")

        refuse = self._at(f"refused/{entry.number}")
        return Links(follow, submit, refuse, target="_top", policy=self.page_policy(entry.number))

    def page_policy(self, number: int) -> str:
        """The page may load its own files and nothing else, send a form only to the viewer."""
        own = f"{self.origin}/{self.secret}/page/{number}/"
        return (
            f"default-src 'none'; img-src {own} data:; style-src {own} 'unsafe-inline'; "
            f"font-src {own} data:; media-src {own} data:; frame-src {own}; "
            f"form-action {self.origin}/{self.secret}/; base-uri 'none'"
        )

    def _forward(self, entry: Entry) -> int | None:
        later = [n for n, e in self.entries.items() if e.previous == entry.number]
        return max(later, default=None)

    def _forget_old_copies(self) -> None:
        held = [n for n, e in self.entries.items() if e.copy is not None]
        for number in sorted(held)[:-MAX_PAGES_HELD]:
            self.entries[number].copy = None

    # --- checks -------------------------------------------------------------------------

    def _admit(self, request: Request) -> None:
        """This run's secret, at this address; anything else is as if there were nothing here."""
        given = str(request.path_params.get("secret", ""))
        host = request.headers.get("host", "")
        if not secrets.compare_digest(given.encode(), self.secret.encode()) or host != f"{HOST}:{self.port}":
            raise _NotHere()

    def _entry(self, request: Request) -> Entry:
        entry = self.entries.get(int(request.path_params["number"]))
        if entry is None:
            raise _NotHere()
        return entry

    def _at(self, path: str) -> str:
        return f"/{self.secret}/{path}"

    def _html(self, page: str, status: int = 200) -> HTMLResponse:
        headers = {
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; frame-src 'self'; form-action 'self'; "
                "base-uri 'none'; frame-ancestors 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        return HTMLResponse(page, status_code=status, headers=headers)

    def at(self, path: str) -> str:
        """An address of this viewer (for its own page), from the path after the secret."""
        return self._at(path)


@contextlib.asynccontextmanager
async def running(fetch: Fetch, describe: str = "", port: int = 0) -> AsyncIterator[Viewer]:
    """A viewer serving on 127.0.0.1 (``port`` 0: one the kernel picks) until the block ends.

    No access log: its lines would hold the run's secret and every address the user visits.
    """
    listener = socket.socket()
    try:
        listener.bind((HOST, port))
    except OSError as exc:
        listener.close()
        raise BentoError(
            f"the viewer cannot listen on {HOST}:{port}: {exc.strerror}", fix="choose another --port"
        ) from None
    viewer = Viewer(fetch, listener.getsockname()[1], describe)
    config = uvicorn.Config(viewer.app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(30):
            while not server.started:  # uvicorn says it only by this flag
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
        yield viewer
    finally:
        server.should_exit = True
        with teardown("stopping the viewer's server", TimeoutError, OSError):
            await asyncio.wait_for(serving, 30)
        listener.close()


class _NotHere(Exception):
    """Answered 404, whatever the reason: a wrong secret and a missing page look the same."""


async def _not_here(_request: Request, _exc: Exception) -> Response:
    return Response(b"not found\n", status_code=404, media_type="text/plain")


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and len(text) < 10 else None


async def _bounded_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BODY:
            raise _NotHere()
    return body
