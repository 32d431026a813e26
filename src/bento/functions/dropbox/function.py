"""Dropbox's entry points on the box: ``put`` and ``get``; ``reserve`` and ``fill``.

Everything here is sealed by the client already: the box keeps and hands back bytes it
cannot read. Rights travel on the session's input, never as invocation arguments (which the
box keeps with the session's record); a deposit's id, no secret, is ``get``'s and ``fill``'s
first argument, so a token narrowed to one deposit can name it.

- ``put(fetches, seconds)`` reads the sealed deposit until the client closes its input, and
  answers one JSON object: ``id``, ``fetch`` (the fetch right) and the terms.
- ``reserve(fetches, seconds)`` answers ``id``, ``fill`` and ``fetch`` rights for a deposit
  with no data yet.
- ``fill(id)`` reads one JSON line (``{"fill", "failed", "bytes", "sha256"}``) and then
  exactly that many sealed bytes.
- ``get(id)`` reads the fetch right and answers the sealed bytes; its result says whether
  they are the depositor's sealed reason for having none (``{"failed": true}``).
"""

from __future__ import annotations

import hashlib
import json

from bento.runtime import api

from .deposits import MAX_FETCHES, SECRET_BYTES, DepositError, Deposits, check_id, check_terms, room_for

MAX_RIGHT_INPUT = 256
_FILL_HEAD = "fill starts with one JSON line: the fill right, failed, bytes and sha256"


def put(fetches: int = 1, seconds: float = 86400) -> None:
    check_terms(fetches, seconds)
    data = _input(bytearray(), room_for(fetches))
    ident, fetch, terms = Deposits(api.storage).put(data, fetches, float(seconds))
    api.send(json.dumps({"id": ident, "fetch": fetch, **terms}).encode())


def reserve(fetches: int = 1, seconds: float = 86400) -> None:
    check_terms(fetches, seconds)
    ident, fill, fetch, terms = Deposits(api.storage).reserve(fetches, float(seconds))
    api.send(json.dumps({"id": ident, "fill": fill, "fetch": fetch, **terms}).encode())


def fill(deposit_id: str = "") -> None:
    ident = check_id(deposit_id)
    head = bytearray()
    while b"\n" not in head:
        chunk = api.recv()
        if chunk is None or len(head) > MAX_RIGHT_INPUT + 2048:
            raise DepositError(_FILL_HEAD)
        head += chunk
    line, _, rest = bytes(head).partition(b"\n")
    try:
        given = json.loads(line)
        right, failed = str(given["fill"]), given.get("failed", False) is True
        size, digest = int(given["bytes"]), str(given["sha256"])
    except (ValueError, KeyError, TypeError):
        raise DepositError(_FILL_HEAD) from None
    # Exactly ``size`` bytes, checked: input is delivered at least once, so a client whose
    # connection dropped may send a part twice; then this fill fails and it fills again.
    data = _input(bytearray(rest), room_for(MAX_FETCHES), size)  # its fetches are not known here
    if hashlib.sha256(data).hexdigest() != digest:
        raise DepositError("the deposit arrived damaged (its SHA-256 differs); fill again")
    api.send(json.dumps(Deposits(api.storage).fill(ident, right, data, failed=failed)).encode())


def _input(data: bytearray, keep: int, size: int | None = None) -> bytes:
    """The rest of the session's input (or its first ``size`` bytes), within the room this
    Dropbox's storage has left once ``keep`` bytes stay free (the deposit's claims)."""
    quota = api.storage.usage()
    room = quota["quota"] - quota["used"] - keep
    while True:
        if len(data) > room or (size is not None and size > room):
            raise DepositError(f"the deposit is larger than the {max(room, 0)} bytes this Dropbox has free")
        if size is not None and len(data) >= size:
            return bytes(data[:size])
        chunk = api.recv()
        if chunk is None:
            if size is not None:
                raise DepositError(f"the input ended after {len(data)} of the {size} bytes announced")
            return bytes(data)
        data += chunk


def get(deposit_id: str = "") -> dict[str, bool]:
    ident = check_id(deposit_id)
    # One right, and nothing after it counts: input is delivered at least once, so a
    # client whose connection dropped and came back may have sent it twice.
    given = bytearray()
    while len(given.strip()) < 2 * SECRET_BYTES and (chunk := api.recv()) is not None:
        given += chunk
        if len(given) > MAX_RIGHT_INPUT:
            raise DepositError("that is not a Dropbox right")
    right = given.decode("ascii", errors="replace").strip()[: 2 * SECRET_BYTES]
    data, terms = Deposits(api.storage).take(ident, right)
    api.send(data)
    return {"failed": bool(terms.get("failed"))}
