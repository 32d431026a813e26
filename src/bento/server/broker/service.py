"""Serving one instance's broker socket: tagged requests, answered concurrently, until the instance goes.

The socket is ``SOCK_SEQPACKET``: the kernel keeps message boundaries, so a request is
exactly one message, never a prefix of two. A message is a 4-byte tag (big-endian; the
function's runtime numbers its requests from 1) followed by a JSON object of at most
:data:`MAX_REQUEST` bytes; a longer one is cut by the kernel and refused as such. Each
reply carries its request's tag and a JSON object ``{"ok": true, ...}`` or ``{"ok":
false, "error", "code", "denied"}`` (and ``"busy"``, the budget's name, where a budget
is spent only for now: the same request may pass once one of its units comes back); a
reply that grants a socket carries it as ancillary data (SCM_RIGHTS). A message too short
to hold a tag is answered with tag 0, which no request uses. Descriptors a function sends
along with a request are discarded by the kernel (we receive no ancillary data).

Tags let one instance's requests run at once: a thread waiting for a circuit, or for a
stream to an onion service, does not hold up another that connects (a LoadBalancer
forwards many connections at a time). At most :data:`MAX_IN_FLIGHT` are answered at once
per instance; past that the broker stops reading its socket until one is answered, so
a function that floods it only waits on itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

from bento.server.broker.budgets import Exhausted
from bento.server.broker.gate import Denied
from bento.server.broker.operations import Context, Malformed, Table
from bento.server.broker.table import OPERATIONS

log = logging.getLogger("bento.broker")
MAX_REQUEST = 4096
MAX_REPLY = 65536  # the JSON the runtime reads after the tag (bento.runtime.net.MAX_REPLY): never cut
# Requests of one instance answered at once. Each costs a coroutine here and, for a stream,
# a pending stream in tor. 16 capped LoadBalancer at 16 replicas: with 4 clients a replica,
# 13-19 of its forwarded connections were opening at any time, and the rest queued (it served
# 11.5 x one replica; bench/loadbalance.py, docs/benchmarks.md).
MAX_IN_FLIGHT = 64
TAG = struct.Struct(">I")
NO_TAG = TAG.pack(0)
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
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        replying = asyncio.Lock()  # one reply on the socket at a time (one writer callback per fd)
        async with asyncio.TaskGroup() as group:
            answering: set[asyncio.Task[None]] = set()
            try:
                while True:
                    await slots.acquire()
                    try:
                        message = await loop.sock_recv(sock, TAG.size + MAX_REQUEST + 1)
                    except OSError:
                        message = b""
                    if not message:  # the instance closed its end (or sent an empty message: the same to us)
                        slots.release()
                        return
                    task = group.create_task(self._reply(sock, message, slots, replying))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
            finally:
                for task in answering:  # the instance has gone: nobody waits for these answers
                    task.cancel()

    async def _reply(
        self, sock: socket.socket, message: bytes, slots: asyncio.Semaphore, replying: asyncio.Lock
    ) -> None:
        """Answer one message on the socket. Raises nothing: a failure is the reply, or the
        instance has gone (and the reading loop sees it)."""
        try:
            if len(message) < TAG.size:
                reply, granted = self._refuse("malformed", "a broker request starts with a 4-byte tag"), None
                tag = NO_TAG
            else:
                tag = message[: TAG.size]
                reply, granted = await self.answer(message[TAG.size :])
            try:
                async with replying:
                    await _send(sock, tag + reply, granted)
            except OSError:
                pass
            finally:
                if granted is not None:
                    granted.close()  # the instance holds its own copy now
        finally:
            slots.release()

    async def answer(self, raw: bytes) -> tuple[bytes, socket.socket | None]:
        """The reply to one request, and the socket it grants."""
        try:
            if len(raw) > MAX_REQUEST:
                raise Malformed(f"a broker request is at most {MAX_REQUEST} bytes")
            result = await self.table.dispatch(self.context, raw)
        except Denied as exc:
            if not isinstance(exc, Exhausted):
                return self._refuse("denied", str(exc)), None
            busy = {"busy": exc.budget} if exc.for_now else {}
            return self._refuse("denied", str(exc), f"budget-{exc.budget}", busy), None
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

    def _refuse(
        self, code: str, message: str, reason: str | None = None, extra: dict[str, str] | None = None
    ) -> bytes:
        """A refusal, counted: ``reason`` (``code`` if None) is a name from a fixed set ("denied",
        "malformed", "budget-circuits"...), never the message, which quotes the request."""
        self.context.denied += 1
        self.context.on_refusal(reason or code)
        return _encode({"ok": False, "code": code, "denied": True, "error": message, **(extra or {})})


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
