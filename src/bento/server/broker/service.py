"""Serving one instance's broker socket: one request, one reply, until the instance goes.

The socket is ``SOCK_SEQPACKET``: the kernel keeps message boundaries, so a request is
exactly one message, never a prefix of two. A request is a JSON object of at most
:data:`MAX_REQUEST` bytes; a longer one is cut by the kernel and refused as such. A
reply is a JSON object ``{"ok": true, ...}`` or ``{"ok": false, "error", "code",
"denied"}``; a reply that grants a socket carries it as ancillary data (SCM_RIGHTS).
Descriptors a function sends along with a request are discarded by the kernel (we
receive no ancillary data).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any

from bento.server.broker.gate import Denied
from bento.server.broker.operations import Context, Malformed, Table
from bento.server.broker.table import OPERATIONS

log = logging.getLogger("bento.broker")
MAX_REQUEST = 4096
MAX_REPLY = 65536  # what the runtime reads (bento.runtime.net.MAX_REPLY): one message, never cut
_INTERNAL = b'{"ok": false, "code": "internal", "denied": false, "error": "internal error"}'


@dataclass
class Broker:
    """Serves one instance's requests until it exits."""

    context: Context
    table: Table = OPERATIONS

    @property
    def granted(self) -> int:
        return self.context.granted

    @property
    def denied(self) -> int:
        return self.context.denied

    async def aclose(self) -> None:
        """The instance has ended: release what its operations hold (storage transfers, Tor)."""
        await self.context.aclose()

    async def serve(self, sock: socket.socket) -> None:
        """Answer requests until the instance closes its end. Raises nothing a function causes."""
        try:
            await self._serve(sock)
        finally:
            await self.context.aclose()

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        while True:
            try:
                request = await loop.sock_recv(sock, MAX_REQUEST + 1)
            except OSError:
                return
            if not request:
                return  # the instance closed its end (or sent an empty message: the same to us)
            reply, granted = await self.answer(request)
            try:
                await _send(sock, reply, granted)
            except OSError:
                return
            finally:
                if granted is not None:
                    granted.close()  # the instance holds its own copy now

    async def answer(self, raw: bytes) -> tuple[bytes, socket.socket | None]:
        """The reply to one request, and the socket it grants."""
        try:
            if len(raw) > MAX_REQUEST:
                raise Malformed(f"a broker request is at most {MAX_REQUEST} bytes")
            result = await self.table.dispatch(self.context, raw)
        except Denied as exc:
            return self._refuse("denied", str(exc)), None
        except Malformed as exc:
            return self._refuse("malformed", f"malformed broker request: {exc}"), None
        except (ValueError, KeyError, TypeError) as exc:  # a handler's own checks of its fields
            return self._refuse("malformed", f"malformed broker request: {type(exc).__name__}: {exc}"), None
        except OSError as exc:
            # The errno lets the function's runtime raise the exception class a direct call would.
            failed = {
                "ok": False,
                "code": "failed",
                "denied": False,
                "error": _describe(exc),
                "errno": exc.errno,
            }
            return _encode(failed), None
        except Exception:  # a bug of ours must not become the function's problem, nor end the broker
            log.exception("broker operation failed")
            return _INTERNAL, None
        try:
            reply = _encode({"ok": True, **result.fields})
            if len(reply) > MAX_REPLY:
                raise ValueError(f"a reply of {len(reply)} bytes")
        except (TypeError, ValueError):
            if result.sock is not None:
                result.sock.close()
            log.exception("broker reply not serialisable, or over %d bytes", MAX_REPLY)
            return _INTERNAL, None
        self.context.granted += 1
        return reply, result.sock

    def _refuse(self, code: str, message: str) -> bytes:
        self.context.denied += 1
        return _encode({"ok": False, "code": code, "denied": True, "error": message})


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply).encode()


def _describe(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc}" if exc.strerror or exc.args else type(exc).__name__


async def _send(sock: socket.socket, payload: bytes, granted: socket.socket | None) -> None:
    """One reply message, with the granted socket attached; waits while the socket is full."""
    fds = [granted.fileno()] if granted is not None else []
    while True:
        try:
            socket.send_fds(sock, [payload], fds)
            return
        except BlockingIOError:
            await _writable(sock)


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock, wake)
    try:
        await ready
    finally:
        loop.remove_writer(sock)
