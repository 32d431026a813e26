"""The function's storage: ``api.storage``, a key-value store kept by the box.

Shared by every instance and session of the function, kept until it is shut down (or
the box restarts), encrypted on the box's disk under a key only the server's memory
holds. Values are bytes (a str is stored UTF-8 encoded)::

    api.storage.put("visits", b"3")
    api.storage.get("visits")            # b"3", or None if there is none
    api.storage.create("claim/1")        # True once: the one atomic step between instances
    with api.storage.open("log", "a") as f: f.write(b"one more line\\n")

Every call asks the box over the broker socket; a value travels over a socket pair of
its own. A refusal (over quota, no storage in the manifest, ...) raises StorageError.
"""

from __future__ import annotations

import io
import json
import socket

from bento.runtime import net

TYPE_CHECKING = False  # importing typing would cost the sandbox ~3 ms of start-up
if TYPE_CHECKING:
    from typing import Any

__all__ = ["StorageBusy", "StorageError", "create", "delete", "get", "keys", "open", "put", "usage"]


class StorageError(OSError):
    """The box refused a storage request; the message says why."""


class StorageBusy(StorageError):
    """Refused for now: this function's storage transfers at once are all in use; the same
    request may pass once one ends."""


def _ask(request: dict[str, Any]) -> tuple[dict[str, Any], socket.socket | None]:
    try:
        return net._ask(request)
    except net.Busy as exc:
        raise StorageBusy(str(exc).removeprefix("Bento broker: ")) from None
    except PermissionError as exc:
        raise StorageError(str(exc).removeprefix("Bento broker: ")) from None


def _read_all(sock: socket.socket, size: int) -> bytes:
    with sock:
        sock.settimeout(None)
        data = bytearray()
        while len(data) < size:
            chunk = sock.recv(min(1 << 20, size - len(data)))
            if not chunk:
                raise StorageError(f"the box sent {len(data)} of {size} bytes")
            data += chunk
        return bytes(data)


def put(key: str, value: bytes | str) -> None:
    """Store ``value`` under ``key``, replacing what was there. Counted against the quota."""
    _write({"op": "storage.put", "key": key}, value)


def create(key: str, value: bytes | str = b"") -> bool:
    """Store ``value`` under ``key`` only if there is no ``key`` yet (nor another create of it
    under way); True if this call created it. Atomic across the function's instances: of
    many creates of one key at once, exactly one returns True (a claim, a lock, a count)."""
    return _write({"op": "storage.put", "key": key, "exclusive": True}, value)


def _write(request: dict[str, Any], value: bytes | str) -> bool:
    data = value.encode() if isinstance(value, str) else bytes(value)
    _, sock = _ask({**request, "size": len(data)})
    if sock is None:
        return False  # an exclusive create of a key that is taken
    with sock:
        sock.settimeout(None)
        if data:  # the box answers an empty value at once, and may have closed its end
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := sock.recv(4096):
            reply += chunk
    try:
        status = json.loads(reply)
    except ValueError:
        raise StorageError("the box did not confirm the write") from None
    if not status.get("ok"):
        raise StorageError(status.get("error", "the write failed"))
    return True


def get(key: str, default: bytes | None = None) -> bytes | None:
    """The value stored under ``key``, or ``default`` if there is none."""
    reply, sock = _ask({"op": "storage.get", "key": key})
    if not reply.get("found") or sock is None:
        return default
    return _read_all(sock, int(reply["size"]))


def delete(key: str) -> bool:
    """Delete ``key``; True if it existed."""
    reply, _ = _ask({"op": "storage.delete", "key": key})
    return bool(reply["existed"])


def keys(prefix: str = "") -> list[str]:
    """The stored keys that start with ``prefix``, sorted."""
    reply, sock = _ask({"op": "storage.list", "prefix": prefix})
    assert sock is not None
    return list(json.loads(_read_all(sock, int(reply["size"]))))


def usage() -> dict[str, int]:
    """``{"used": bytes, "quota": bytes, "objects": n}``; keys count against the quota too."""
    reply, _ = _ask({"op": "storage.usage"})
    return {name: int(reply[name]) for name in ("used", "quota", "objects")}


class _Writer(io.BytesIO):
    def __init__(self, key: str, initial: bytes) -> None:
        super().__init__(initial)
        self.seek(0, io.SEEK_END)
        self._key = key

    def close(self) -> None:
        if not self.closed:
            put(self._key, self.getvalue())  # the whole object, in one write, at close
        super().close()


def open(key: str, mode: str = "rb") -> io.BytesIO:
    """A file-like view of one object: "rb" reads it, "wb" replaces it and "ab" appends at close.

    The object is held in memory while open; a missing object opened "rb" raises
    FileNotFoundError.
    """
    mode = mode.replace("b", "")
    if mode == "r":
        value = get(key)
        if value is None:
            raise FileNotFoundError(f"no stored object {key!r}")
        return io.BytesIO(value)
    if mode in ("w", "a"):
        return _Writer(key, (get(key) or b"") if mode == "a" else b"")
    raise ValueError(f"mode {mode!r}: use 'rb', 'wb' or 'ab'")
