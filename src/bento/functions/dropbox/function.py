"""Dropbox's entry points on the box: ``put`` and ``get``; ``reserve`` and ``fill``.

Data and tokens travel on the session's input, never as invocation arguments (which the
box keeps with the session's record): ``put`` reads the data until the client closes its
input and answers the token on its output; ``get`` reads the token and answers the data.
``reserve`` answers a token for a deposit with no data yet; ``fill`` reads one JSON line
(``{"token": ..., "error": ""}``) and then the data, until the input ends.
"""

from __future__ import annotations

import json

from bento.runtime import api

from .deposits import DepositError, Deposits

MAX_TOKEN_INPUT = 256


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
            raise DepositError("fill starts with one JSON line: the token, and an error or none")
        head += chunk
    line, _, rest = bytes(head).partition(b"\n")
    try:
        given = json.loads(line)
        token, error = str(given["token"]), str(given.get("error", ""))
    except (ValueError, KeyError, TypeError):
        raise DepositError("fill starts with one JSON line: the token, and an error or none") from None
    meta = Deposits(api.storage).fill(token, _input(bytearray(rest)), error)
    api.send(json.dumps(meta).encode())


def _terms(fetches: object, seconds: object) -> None:
    if isinstance(fetches, bool) or not isinstance(fetches, int) or not isinstance(seconds, int | float):
        raise DepositError("fetches is a whole number and seconds a number")


def _input(data: bytearray) -> bytes:
    """The rest of the session's input, within the room this Dropbox's storage has left."""
    quota = api.storage.usage()
    room = quota["quota"] - quota["used"]
    while True:
        if len(data) > room:
            raise DepositError(f"the deposit is larger than the {room} bytes this Dropbox has free")
        chunk = api.recv()
        if chunk is None:
            return bytes(data)
        data += chunk


def get() -> None:
    given = bytearray()
    while (chunk := api.recv()) is not None:
        given += chunk
        if len(given) > MAX_TOKEN_INPUT:
            raise DepositError("that is not a Dropbox token")
    data, _ = Deposits(api.storage).take(given.decode("ascii", errors="replace").strip())
    api.send(data)
