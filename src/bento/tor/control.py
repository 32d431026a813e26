"""Stem helpers: connecting to a tor control port.

Stem's controller is synchronous and runs a reader thread of its own; callers in async
code hand blocking calls to ``asyncio.to_thread``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import stem
import stem.control

from bento.errors import BentoError


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too) into its parts, with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BentoError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def connect(address: str) -> stem.control.Controller:
    """Open and authenticate a controller on ``host:port`` (cookie or no auth)."""
    host, port = parse_address(address)
    try:
        controller = stem.control.Controller.from_port(address=host, port=port)
    except stem.SocketError as exc:
        raise BentoError(
            f"cannot reach tor's control port at {address}: {exc}",
            fix="check that tor is running with ControlPort set to that address",
        ) from exc
    try:
        controller.authenticate()
    except stem.connection.AuthenticationFailure as exc:
        controller.close()
        raise BentoError(
            f"tor's control port at {address} refused authentication: {exc}",
            fix="enable CookieAuthentication 1 and make the cookie readable by this user",
        ) from exc
    return controller


def take_ownership(address: str, cookie_file: Path, *, timeout: float = 10.0) -> socket.socket:
    """Tie a tor process to this one: it exits as soon as the returned socket closes.

    For a tor started with ``__OwningControllerProcess`` set to our pid. TAKEOWNERSHIP
    makes tor exit when this control connection closes, which the kernel does for us
    however we die, so a killed test session leaves no tor behind. The pid check is
    then switched off (RESETCONF), which also stops Stem, on later connections from
    this process, taking ownership itself and killing tor when it disconnects.
    Speaks the control protocol directly: holding a socket needs no Stem reader thread.
    """
    host, port = parse_address(address)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        cookie = cookie_file.read_bytes().hex()
        for command in (f"AUTHENTICATE {cookie}", "TAKEOWNERSHIP", "RESETCONF __OwningControllerProcess"):
            sock.sendall(command.encode() + b"\r\n")
            reply = _read_reply(sock)
            if not reply.startswith("250"):
                raise BentoError(f"tor at {address} refused {command.split()[0]}: {reply.strip()}")
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def _read_reply(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise BentoError("tor closed its control connection")
        data += chunk
    return data.decode(errors="replace")
