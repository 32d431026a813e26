"""Dropbox's entry points on the box: ``put`` and ``get``.

Data and tokens travel on the session's input, never as invocation arguments (which the
box keeps with the session's record): ``put`` reads the data until the client closes its
input and answers the token on its output; ``get`` reads the token and answers the data.
"""

from __future__ import annotations

import json

from bento.runtime import api

from .deposits import DepositError, Deposits

MAX_TOKEN_INPUT = 256


def put(fetches: int = 1, seconds: float = 86400) -> None:
    if isinstance(fetches, bool) or not isinstance(fetches, int) or not isinstance(seconds, int | float):
        raise DepositError("fetches is a whole number and seconds a number")
    quota = api.storage.usage()
    room = quota["quota"] - quota["used"]
    data = bytearray()
    while (chunk := api.recv()) is not None:
        data += chunk
        if len(data) > room:
            raise DepositError(f"the deposit is larger than the {room} bytes this Dropbox has free")
    token, meta = Deposits(api.storage).put(bytes(data), fetches, float(seconds))
    api.send(json.dumps({"token": token, **meta}).encode())


def get() -> None:
    given = bytearray()
    while (chunk := api.recv()) is not None:
        given += chunk
        if len(given) > MAX_TOKEN_INPUT:
            raise DepositError("that is not a Dropbox token")
    data, _ = Deposits(api.storage).take(given.decode("ascii", errors="replace").strip())
    api.send(data)
