"""An httpx transport whose connections come from an httpcore network backend of Bento's own.

httpx builds its connection pool in its constructor and has no parameter for the network
backend that httpcore takes, which is the seam both of Bento's ways to a box need: Tor's
SOCKS port with optimistic data (``tor_socks``) and, inside a function, streams the broker
opens (``via_broker``). This class replaces the pool httpx built, before any use.
"""

from __future__ import annotations

import ssl

import httpcore
import httpx


class BackendTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` over ``backend``, with ``limits`` (httpx's by default)."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits()
        # httpx would build a TLS context that loads every CA certificate (40 ms of each
        # `bento invoke` on a busy 2-core host) for a pool replaced below: the context is never
        # used. An empty one, which trusts nothing (so fails closed), costs nothing.
        super().__init__(limits=limits, verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
