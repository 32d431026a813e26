"""A small web site with every kind of reference Browser must follow, served for real.

Two HTTP servers (uvicorn + Starlette) on loopback: the first party on 127.0.0.1 and a
"third party" reached by the name ``localhost``, so fetching crosses hosts and names
are resolved (by the box's broker when Browser runs in a sandbox). Until the testnet's
synthetic corpus lands, the Browser tests use this site.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route


def png(red: int, green: int, blue: int) -> bytes:
    """A valid 2x2 PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((red, green, blue)) * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Gate:
    """A response held back: ``arrived`` is set once it is asked for, and it is answered
    once the test sets ``opened`` (so a test knows the fetcher is mid-page)."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Server:
    host: str  # the address it listens on
    name: str  # the host name pages use for it
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> (body, type)
    redirects: dict[str, str] = field(default_factory=dict)
    port: int = 0
    requests: list[str] = field(default_factory=list)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> the request's headers
    delays: dict[str, float] = field(default_factory=dict)  # path -> seconds before answering
    encodings: dict[str, str] = field(default_factory=dict)  # path -> Content-Encoding it claims
    gates: dict[str, Gate] = field(default_factory=dict)  # path -> held until the test opens it
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def origin(self) -> str:
        return f"http://{self.name}:{self.port}"

    async def _answer(self, request: Request) -> Response:
        path = request.url.path
        self.requests.append(path)
        self.headers[path] = dict(request.headers)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if path in self.delays:  # a slow server: latency, not synchronisation
                await asyncio.sleep(self.delays[path])
            if (gate := self.gates.get(path)) is not None:
                gate.arrived.set()
                await gate.opened.wait()
            return self._response(path)
        finally:
            self.in_flight -= 1

    def _response(self, path: str) -> Response:
        if path in self.redirects:
            return RedirectResponse(self.redirects[path], status_code=302)
        if path not in self.files:
            return Response(b"not found\n", status_code=404, media_type="text/plain")
        body, kind = self.files[path]
        coding = {"Content-Encoding": self.encodings[path]} if path in self.encodings else None
        return Response(body, media_type=kind, headers=coding)


@contextlib.asynccontextmanager
async def serve(*servers: Server) -> AsyncIterator[None]:
    """Run ``servers`` until the block ends (ports are chosen by the kernel, set on each)."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    try:
        for server in servers:
            sock = socket.socket()
            sock.bind((server.host, 0))
            server.port = sock.getsockname()[1]
            app = Starlette(routes=[Route("/{path:path}", server._answer, methods=["GET", "HEAD"])])
            config = uvicorn.Config(app, log_level="warning", lifespan="off")
            instance = uvicorn.Server(config)
            task = asyncio.create_task(instance.serve(sockets=[sock]))
            running.append((instance, task))
            async with asyncio.timeout(30):
                while not instance.started:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
        yield
    finally:
        for instance, _ in running:
            instance.should_exit = True
        for _, task in running:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)


def sample_site() -> tuple[Server, Server]:
    """A page using img, srcset, picture, CSS url() and @import, fonts, a script, an iframe,
    a redirect, a background attribute, and a third-party host; plus links and a 404."""
    first, third = Server("127.0.0.1", "127.0.0.1"), Server("127.0.0.1", "localhost")
    # Contents refer to the third party by name; its port is known only once it runs.
    first.files = {
        "/": (b"", "text/html"),  # filled in by finish()
        "/css/site.css": (b"", "text/css"),
        "/css/imported.css": (b".imp { background-image: url('/img/imported.png'); }\n", "text/css"),
        "/frame.html": (
            b'<!doctype html><html><head><link rel="stylesheet" href="frame.css"></head>'
            b'<body><img id="in-frame" src="img/frame.png"></body></html>',
            "text/html; charset=utf-8",
        ),
        "/frame.css": (b"body { background: url(img/frame-bg.png); }\n", "text/css"),
        "/img/a.png": (png(255, 0, 0), "image/png"),
        "/img/a2.png": (png(200, 0, 0), "image/png"),
        "/img/wide.png": (png(0, 0, 255), "image/png"),
        "/img/new.png": (png(0, 255, 0), "image/png"),
        "/img/inline.png": (png(9, 9, 9), "image/png"),
        "/img/bg-attr.png": (png(1, 2, 3), "image/png"),
        "/img/style-el.png": (png(4, 5, 6), "image/png"),
        "/img/css.png": (png(7, 8, 9), "image/png"),
        "/img/imported.png": (png(10, 11, 12), "image/png"),
        "/img/frame.png": (png(13, 14, 15), "image/png"),
        "/img/frame-bg.png": (png(16, 17, 18), "image/png"),
    }
    first.redirects = {"/old.png": "/img/new.png"}
    third.files = {
        "/lib.js": (b'document.documentElement.dataset.script = "ran";\n', "text/javascript"),
        "/font.woff2": (b"wOF2 not a real font, but a real request", "font/woff2"),
        "/logo.png": (png(20, 21, 22), "image/png"),
    }
    return first, third


def finish(first: Server, third: Server) -> None:
    """Write the documents that name the servers' ports (call inside ``serve``)."""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Browser test page</title>
<link rel="stylesheet" href="/css/site.css">
<link rel="preconnect" href="{third.origin}">
<style>@import url("/css/imported.css"); .s {{ background-image: url("/img/style-el.png"); }}</style>
<script src="{third.origin}/lib.js"></script>
</head><body background="/img/bg-attr.png">
<h1 class="s">A page</h1>
<h2>Its parts</h2>
<div class="imp" style="width: 2px; height: 2px"></div>
<img id="plain" src="img/a.png" srcset="img/a.png 1x, img/a2.png 2x">
<picture><source media="(min-width: 1px)" srcset="/img/wide.png"><img id="pic" src="img/a.png"></picture>
<img id="moved" src="/old.png">
<img id="third" src="{third.origin}/logo.png">
<div id="inline" style="background-image: url(img/inline.png); width: 2px; height: 2px"></div>
<p class="font">text in a web font</p>
<iframe id="frame" src="/frame.html"></iframe>
<a href="/elsewhere.html">a link, not fetched</a>
<img id="gone" src="/missing.png">
</body></html>
"""
    css = f"""@font-face {{ font-family: "Test"; src: url("{third.origin}/font.woff2") format("woff2"); }}
.font {{ font-family: "Test", sans-serif; }}
h2 {{ background: url(../img/css.png); }}
"""
    first.files["/"] = (page.encode(), "text/html; charset=utf-8")
    first.files["/css/site.css"] = (css.encode(), "text/css")
