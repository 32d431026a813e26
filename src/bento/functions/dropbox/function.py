"""Dropbox's entry points on the box: ``put`` and ``get``; ``reserve`` and ``fill``.

Data and tokens travel on the session's input, never as invocation arguments (which the
box keeps with the session's record): ``put`` reads the data until the client closes its
input and answers the token on its output; ``get`` reads the token and answers the data.
``reserve`` answers a token for a deposit with no data yet; ``fill`` reads one JSON line
(``{"token", "error", "bytes", "sha256"}``) and then exactly that many bytes.
"""

from __future__ import annotations

import hashlib
import json

from bento.runtime import api

from .deposits import TOKEN_BYTES, DepositError, Deposits

MAX_TOKEN_INPUT = 256
_FILL_HEAD = "fill starts with one JSON line: token, bytes, sha256, and an error or none"


def put(fetches: int = 1, seconds: float = 86400) -> None:
    _terms(fetches, seconds)
    token, meta = Deposits(api.storage).put(_input(bytearray()), fetches, float(seconds))
    api.send(json.dumps({"token": token, **meta}).encode())


def reserve(fetches: int = 1, seconds: float = 86400) -> None:
    _terms(fetches, seconds)
    token, meta = Deposits(api.storage).reserve(fetches, float(seconds))
    api.send(json.dumps({"token": token, **meta}).encode())


def fill() -> None:
    head = bytearray()
    while b"\n" not in head:
        chunk = api.recv()
        if chunk is None or len(head) > MAX_TOKEN_INPUT + 2048:
            raise DepositError(_FILL_HEAD)
        head += chunk
    line, _, rest = bytes(head).partition(b"\n")
    try:
        given = json.loads(line)
        token, error = str(given["token"]), str(given.get("error", ""))
        size, digest = int(given["bytes"]), str(given["sha256"])
    except (ValueError, KeyError, TypeError):
        raise DepositError(_FILL_HEAD) from None
    # Exactly ``size`` bytes, checked: input is delivered at least once, so a client whose
    # connection dropped may send a part twice; then this fill fails and it fills again.
    data = _input(bytearray(rest), size)
    if hashlib.sha256(data).hexdigest() != digest:
        raise DepositError("the deposit arrived damaged (its SHA-256 differs); fill again")
    meta = Deposits(api.storage).fill(token, data, error)
    api.send(json.dumps(meta).encode())


def _terms(fetches: object, seconds: object) -> None:
    if isinstance(fetches, bool) or not isinstance(fetches, int) or not isinstance(seconds, int | float):
        raise DepositError("fetches is a whole number and seconds a number")


def _input(data: bytearray, size: int | None = None) -> bytes:
    """The rest of the session's input (or its first ``size`` bytes), within the room this
    Dropbox's storage has left."""
    quota = api.storage.usage()
    room = quota["quota"] - quota["used"]
    while True:
        if len(data) > room or (size is not None and size > room):
            raise DepositError(f"the deposit is larger than the {room} bytes this Dropbox has free")
        if size is not None and len(data) >= size:
            return bytes(data[:size])
        chunk = api.recv()
        if chunk is None:
            if size is not None:
                raise DepositError(f"the input ended after {len(data)} of the {size} bytes announced")
            return bytes(data)
        data += chunk


def get() -> None:
    # One token, and nothing after it counts: input is delivered at least once, so a
    # client whose connection dropped and came back may have sent it twice.
    given = bytearray()
    while len(given.strip()) < 2 * TOKEN_BYTES and (chunk := api.recv()) is not None:
        given += chunk
        if len(given) > MAX_TOKEN_INPUT:
            raise DepositError("that is not a Dropbox token")
    token = given.decode("ascii", errors="replace").strip()[: 2 * TOKEN_BYTES]
    data, _ = Deposits(api.storage).take(token)
    api.send(data)
