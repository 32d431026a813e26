"""A tiny web site on 127.0.0.1 for the testnet's exits to reach.

The testnet never leaves this machine, so the demo and the tests serve their own pages.
HTTP/1.1 GET and HEAD only, one request per connection: just enough for a browser-like
client through Tor.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}


class LocalSite:
    """``async with LocalSite({"/": b"<html>..."}) as site: site.url``"""

    def __init__(self, pages: dict[str, bytes], content_type: str = "text/html; charset=utf-8") -> None:
        self.pages = pages
        self.content_type = content_type
        self.requests = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the site is not running"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> LocalSite:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            self.requests += 1
            status, body = self._answer(method, target)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {self.content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # a broken request gets no answer
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, method: str, target: str) -> tuple[int, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n"
        path = target.split("?", 1)[0]
        if path not in self.pages:
            return 404, b"not found\n"
        return 200, self.pages[path]
