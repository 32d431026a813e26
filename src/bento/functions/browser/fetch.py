"""Fetching a page and everything it needs, inside the box's exit policy.

Requests go through ``urllib`` with only the HTTP(S) handlers (no file:, ftp: or data:,
no proxies from the environment). Inside a sandbox, ``socket.create_connection`` is the
broker's, so every connection is checked against the function's manifest and the
relay's exit policy, and a refusal arrives here as :class:`PermissionError`.

urllib blocks, so the bounded concurrency is a small thread pool (the one place Bento's
functions use threads: the standard library offers no asynchronous HTTP client, and a
hand-written one would be a parser of our own). Each request has its own time limit,
the whole page has a deadline, and every byte counts against one budget.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import discover
from .discover import CSS, FETCHED, FRAME, RESOURCE, SRCSET, STYLESHEET

DEFAULT_USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 Firefox/128.0"
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class PageError(Exception):
    """The page itself could not be fetched; the message says why, for the user."""


@dataclass
class Limits:
    timeout: float = 20.0  # seconds for one request, from connecting to its last byte
    deadline: float = 120.0  # seconds for the whole page with its resources
    concurrency: int = 16  # requests at once
    per_host: int = 6  # requests at once to one host name, as a browser opens (and the baseline)
    max_bytes: int = 32 << 20  # bytes of all responses together
    max_resources: int = 500  # resources besides the page
    max_depth: int = 4  # nesting of frames and @imports below the page


@dataclass
class Resource:
    url: str
    kind: str = RESOURCE
    depth: int = 0
    final_url: str = ""
    status: int = 0
    content_type: str = ""
    body: bytes = b""
    error: str = ""
    base: str = ""  # HTML: the URL its references are relative to
    seconds: float = 0.0
    _text: str | None = field(default=None, repr=False)

    @property
    def is_html(self) -> bool:
        mime = self.content_type.split(";", 1)[0].strip().lower()
        if mime:
            return mime in ("text/html", "application/xhtml+xml")
        return self.kind == FRAME and self.body.lstrip()[:1] == b"<"

    @property
    def is_css(self) -> bool:
        mime = self.content_type.split(";", 1)[0].strip().lower()
        return mime == "text/css" or (self.kind == STYLESHEET and mime in ("", "text/plain"))

    def text(self) -> str:
        """The body decoded: charset from the HTTP header, else a ``<meta charset>``, else UTF-8."""
        if self._text is None:
            found = re.search(r"charset=([A-Za-z0-9_.:-]+)", self.content_type, re.IGNORECASE)
            charset = found.group(1) if found else None
            if charset is None and (meta := _META_CHARSET.search(self.body[:2048])):
                charset = meta.group(1).decode("ascii")
            try:
                self._text = self.body.decode(charset or "utf-8", errors="replace")
            except LookupError:
                self._text = self.body.decode("utf-8", errors="replace")
        return self._text


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()

    def take(self, count: int) -> bool:
        with self.lock:
            if self.used + count > self.limit:
                return False
            self.used += count
            return True


class _TooLarge(Exception):
    pass


class Fetcher:
    def __init__(self, limits: Limits, user_agent: str, cookies: dict[str, str], page_url: str) -> None:
        self.limits = limits
        self.user_agent = user_agent or DEFAULT_USER_AGENT
        self.budget = _Budget(limits.max_bytes)
        self.stopped = False
        jar = http.cookiejar.CookieJar()
        host = urlsplit(page_url).hostname or ""
        for name, value in cookies.items():  # the user's cookies go to the page's own host only
            jar.set_cookie(_cookie(host, name, value))
        self.opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(),
            urllib.request.HTTPRedirectHandler(),
            urllib.request.HTTPErrorProcessor(),
            urllib.request.HTTPCookieProcessor(jar),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.UnknownHandler(),
        ):
            self.opener.add_handler(handler)

    def fetch(self, resource: Resource) -> Resource:
        """Fill in ``resource`` from the web; on failure, its ``error`` says why."""
        started = time.monotonic()
        request = urllib.request.Request(  # noqa: S310 (the opener has HTTP(S) handlers only)
            resource.url,
            headers={"User-Agent": self.user_agent, "Accept": "*/*", "Accept-Encoding": "identity"},
        )
        try:
            with self.opener.open(request, timeout=self.limits.timeout) as response:
                resource.status = response.status
                resource.final_url = response.url
                resource.content_type = response.headers.get("Content-Type", "")
                resource.body = self._read(response, started)
        except urllib.error.HTTPError as exc:
            exc.close()
            resource.status = exc.code
            resource.error = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            resource.error = explain(exc.reason, resource.url, self.limits.timeout)
        except _TooLarge as exc:
            resource.error = str(exc)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            resource.error = explain(exc, resource.url, self.limits.timeout)
        resource.seconds = time.monotonic() - started
        return resource

    def _read(self, response: http.client.HTTPResponse, started: float) -> bytes:
        """The body, its content coding undone as it arrives; the decoded bytes are what the
        page's budget is charged, so a small compressed body cannot hold a large one."""
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.budget.limit - self.budget.used:
            raise _TooLarge(f"{declared} bytes: over the limit of {self.budget.limit} bytes for the page")
        decoder = _Decoder(response.headers.get("Content-Encoding"))
        pieces = []
        while chunk := response.read(1 << 16):
            if self.stopped or time.monotonic() - started > self.limits.timeout:
                raise TimeoutError()
            for piece in decoder.feed(chunk):
                if not self.budget.take(len(piece)):
                    decoded = " (decoded)" if decoder.coding != "identity" else ""
                    raise _TooLarge(f"over the limit of {self.budget.limit} bytes for the page{decoded}")
                pieces.append(piece)
        return b"".join(pieces)


class _Decoder:
    """Undoes a body's content coding (asked for none, a server may still send gzip) in
    steps of at most ``STEP`` bytes, so that each step is charged before the next is made."""

    STEP = 1 << 16

    def __init__(self, encoding: str | None) -> None:
        self.coding = (encoding or "identity").strip().lower()
        if self.coding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise ValueError(f"a body in the content coding {self.coding!r}, which Browser cannot decode")
        # wbits 47: gzip or zlib, detected; deflate is zlib, or raw deflate as some servers send it.
        self._inflater = zlib.decompressobj(15 if self.coding == "deflate" else 47)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.coding == "identity":
            yield data
            return
        pending = data
        while True:
            try:
                piece = self._inflater.decompress(pending, self.STEP)
            except zlib.error as exc:
                if self.coding != "deflate" or self._started:
                    raise ValueError(f"a {self.coding} body that does not decompress: {exc}") from None
                self._inflater, self._started = zlib.decompressobj(-15), True  # raw deflate, from the start
                continue
            self._started = True
            pending = self._inflater.unconsumed_tail
            if piece:
                yield piece
            if not pending and len(piece) < self.STEP:
                return  # all of ``data`` is decoded (more may come in the next chunk)


def explain(reason: object, url: str, timeout: float) -> str:
    """A fetch failure in words: which of name, policy, refusal, timeout it was."""
    host = urlsplit(url).hostname or url
    text = str(reason)
    if isinstance(reason, PermissionError):  # the broker: manifest or exit policy
        return f"the box may not connect to {host}: {text.removeprefix('Bento broker: ')}"
    if isinstance(reason, socket.gaierror) or "gaierror" in text or "Name or service not known" in text:
        return f"the name {host} does not resolve (at the exit)"
    if isinstance(reason, ConnectionRefusedError) or "Connection refused" in text:
        return f"{host} refused the connection"
    if isinstance(reason, TimeoutError) or "timed out" in text or "TimeoutError" in text:
        return f"{host} did not answer within {timeout:g} s"
    if isinstance(reason, http.client.HTTPException):
        return f"{host} sent a malformed HTTP answer ({type(reason).__name__})"
    return f"{host}: {type(reason).__name__}: {text}" if text else f"{host}: {type(reason).__name__}"


def _cookie(host: str, name: str, value: str) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(
        0, name, value, None, False, host, False, False, "/", True, False, None, True, None, None, {}
    )


def references(resource: Resource) -> list[tuple[str, str]]:
    """(absolute URL, kind) of everything a fetched HTML document or style sheet needs."""
    found: list[tuple[str, str]] = []
    if resource.error:
        return found
    base = resource.final_url or resource.url
    if resource.is_css:
        for reference, is_import in discover.css_references(resource.text()):
            if url := discover.absolute(reference, base):
                found.append((url, STYLESHEET if is_import else RESOURCE))
    elif resource.is_html:
        resource.base = base = discover.html_base(resource.text(), base)

        def visit(tag: str, attr: str, kind: str, value: str) -> str:
            if kind in FETCHED:
                candidates = [(value, kind)]
            elif kind == SRCSET:
                candidates = [(u, RESOURCE) for u, _ in discover.parse_srcset(value)]
            elif kind == CSS:
                candidates = [(u, STYLESHEET if i else RESOURCE) for u, i in discover.css_references(value)]
            else:
                candidates = []
            found.extend((u, k) for r, k in candidates if (u := discover.absolute(r, base)))
            return value

        discover.walk_html(resource.text(), visit)
    return found


def crawl(
    url: str, limits: Limits, user_agent: str = "", cookies: dict[str, str] | None = None
) -> list[Resource]:
    """The page (first) and every resource it needs, fetched. Raises PageError if the page fails."""
    fetcher = Fetcher(limits, user_agent, cookies or {}, url)
    deadline = time.monotonic() + limits.deadline
    page = fetcher.fetch(Resource(url, FRAME))
    if page.error:
        raise PageError(f"cannot fetch {url}: {page.error}")
    return complete(fetcher, [page], deadline)


def complete(fetcher: Fetcher, fetched: list[Resource], deadline: float) -> list[Resource]:
    """``fetched`` (the page first), and what their HTML and CSS name that is not among them
    yet, fetched, and so on down to the limits' depth; by ``deadline`` (a monotonic time)."""
    limits = fetcher.limits
    seen: dict[str, Resource] = {resource.url: resource for resource in fetched}
    pending: dict[Future[Resource], Resource] = {}
    # Requests wait here, per host name, while their host has ``per_host`` in flight or the
    # whole page ``concurrency``: a browser's limits, so no server is asked for more at once.
    waiting: dict[str, deque[Resource]] = defaultdict(deque)
    in_flight: Counter[str] = Counter()
    with ThreadPoolExecutor(limits.concurrency, thread_name_prefix="fetch") as pool:

        def start_what_fits() -> None:
            for host, queue in waiting.items():
                while queue and in_flight[host] < limits.per_host and len(pending) < limits.concurrency:
                    resource = queue.popleft()
                    in_flight[host] += 1
                    pending[pool.submit(fetcher.fetch, resource)] = resource

        def enqueue(parent: Resource) -> None:
            if parent.depth >= limits.max_depth:
                return
            for ref, kind in references(parent):
                if ref in seen:
                    continue
                resource = Resource(ref, kind, parent.depth + 1)
                seen[ref] = resource
                if len(seen) > limits.max_resources + 1:
                    resource.error = f"not fetched: the page has more than {limits.max_resources} resources"
                    continue
                waiting[_host(ref)].append(resource)

        for resource in fetched:
            enqueue(resource)
        start_what_fits()
        while pending:
            done, _ = wait(
                pending, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
            )
            if not done:  # the page's deadline: what is still running stops at its next read
                fetcher.stopped = True
                for future in pending:
                    future.cancel()
                for resource in [*pending.values(), *(r for queue in waiting.values() for r in queue)]:
                    resource.error = f"not fetched: the page's limit of {limits.deadline:g} s ran out"
                break
            for future in done:
                resource = pending.pop(future)
                in_flight[_host(resource.url)] -= 1
                enqueue(resource)
            start_what_fits()
    return list(seen.values())


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
