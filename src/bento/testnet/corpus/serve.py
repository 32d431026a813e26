"""Serve a corpus over HTTP on its loopback addresses (uvicorn and Starlette).

Every host name of the corpus has an address of its own in 127.0.0.0/8; the server
listens on all of them, on one port picked at start-up (so that no privilege is needed
and several testnets can serve side by side), and answers by the request's Host header.
Run as ``python -m bento.testnet.corpus.serve SEED SITES READY_FILE [DELAY_MS]``: the port
is written to READY_FILE once every address listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
from functools import lru_cache
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bento.testnet.corpus.content import CONTENT_TYPES, render
from bento.testnet.corpus.model import Corpus
from bento.testnet.latency import Link, serve_link
from bento.tor.process import stop_with_owner


def app(corpus: Corpus, port: int) -> Starlette:
    @lru_cache(maxsize=128)
    def body(host: str, path: str) -> bytes | None:
        resource = corpus.by_url.get((host, path))
        return None if resource is None else render(corpus, resource, port)

    async def serve(request: Request) -> Response:
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
        resource = corpus.by_url.get((host, request.url.path))
        content = body(host, request.url.path)
        if resource is None or content is None:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(
            content,
            media_type=CONTENT_TYPES[resource.kind],
            # Script-made requests cross origins (the beacon, the data files).
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"},
        )

    return Starlette(routes=[Route("/{path:path}", serve, methods=["GET", "HEAD"])])


def bind_all(addresses: list[str], attempts: int = 20) -> tuple[int, list[socket.socket]]:
    """One listening socket per address, all on the same port (picked free on the first)."""
    for _ in range(attempts):
        sockets: list[socket.socket] = []
        try:
            for address in addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((address, sockets[0].getsockname()[1] if len(sockets) > 1 else 0))
                sock.listen(128)
            return sockets[0].getsockname()[1], sockets
        except OSError as exc:
            for sock in sockets:
                sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port free on all {len(addresses)} corpus addresses")


async def run(corpus: Corpus, ready: Path, delay_ms: float = 0.0) -> None:
    addresses = sorted(set(corpus.addresses.values()))
    port, sockets = bind_all(addresses)
    links: list[asyncio.Server] = []
    public = port
    if delay_ms > 0:
        # Wide-area latency to the server (see bento.testnet.latency): clients reach a
        # delaying link on every address, which carries their bytes to the server.
        public, link_sockets = bind_all(addresses)
        for address, sock in zip(addresses, link_sockets, strict=True):
            link = Link((address, public), (address, port), delay_ms / 1000)
            links.append(await serve_link(link, sock))
    server = uvicorn.Server(
        uvicorn.Config(app(corpus, public), log_level="warning", access_log=False, lifespan="off")
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    stop_with_owner(loop, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve(sockets=sockets))
    try:
        while not server.started:
            if serving.done():
                await serving  # it failed: say why
                return
            await asyncio.sleep(0.05)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(str(public))
        tmp.replace(ready)
        await serving
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        for sock in sockets:
            sock.close()
        for link_server in links:
            link_server.close()


def main(argv: list[str]) -> int:
    seed, sites, ready = int(argv[0]), int(argv[1]), Path(argv[2])
    delay_ms = float(argv[3]) if len(argv) > 3 else 0.0
    asyncio.run(run(Corpus(seed=seed, sites=sites), ready, delay_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
