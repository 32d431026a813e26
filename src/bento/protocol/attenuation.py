"""Invocation tokens that their holder can narrow, offline: Biscuit tokens and their caveats.

A function's invocation token is a Biscuit (https://www.biscuitsec.org) whose authority block
the box signed at deploy with a key pair of the function's own; the box kept only the public
key. Whoever holds the token can append a block of *caveats* (Datalog checks) without asking
anyone, and hand the narrower token on; blocks are signed in a chain, so a block can be added
but never removed, and every block's checks must pass. A check that names a fact the box does
not provide (a caveat it does not understand) can never pass: the token fails closed.

The box states each invocation as facts, and these are the only caveats it understands:

==============================  ===========================================================
``entry("get")``                the entry point invoked
``time(2026-12-07T15:00:00Z)``  the box's clock
``arg(0, "\\"d3f\\"")``           each positional argument, as compact JSON text
``arg_count(1)``                how many positional arguments; ``kwarg_count(0)``, keywords
``use(1, 3)``                   this is the 3rd use of the token made of blocks 0 to 1
==============================  ===========================================================

``use(i, n)`` is given for every block ``i`` that counts its uses (whose checks name
``use(``): the box counts the uses of that block, by its revocation id, so every token that
extends it shares one count and narrowing cannot reset it.

    >>> from datetime import datetime, timezone
    >>> import biscuit_auth
    >>> key = biscuit_auth.KeyPair()
    >>> root = encode(key.public_key, biscuit_auth.BiscuitBuilder('function("fn")').build(key.private_key))
    >>> until = datetime(2030, 1, 1, tzinfo=timezone.utc)
    >>> narrowed = narrow(root, entries=["get"], uses=1, until=until, args=[7])
    >>> print(parse(narrowed).block_source(1))
    check if entry($entry), {"get"}.contains($entry);
    check if use(1, $n), $n <= 1;
    check if time($time), $time <= 2030-01-01T00:00:00Z;
    check if arg_count(1), kwarg_count(0);
    check if arg(0, "7");
    <BLANKLINE>
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import biscuit_auth

PREFIX = "bsc1."  # then the root public key and the Biscuit, each in unpadded base64url
MAX_WIRE = 4096  # characters: a root token is about 300, each block of caveats about 450 more
MAX_BLOCKS = 8  # the authority block and seven of caveats: bounds what one check costs the box
_USE = re.compile(r"\buse\(")


class AttenuationError(ValueError):
    """A narrowable token that is malformed, or a narrowing that cannot be written."""


class UnreadableToken(AttenuationError):
    """Not a narrowable token: a plain or blinded one, malformed, altered, or over the limits."""


class RefusedNarrowing(AttenuationError):
    """A readable token, but a narrowing that cannot be written (no caveat, a bad one, too many blocks)."""


def is_narrowable(bearer: str) -> bool:
    """Whether a bearer credential is a Biscuit invocation token (a root or a narrowed one)."""
    return bearer.startswith(PREFIX)


def encode(root: biscuit_auth.PublicKey, token: biscuit_auth.Biscuit) -> str:
    """The token on the wire: ``bsc1.`` + the root public key + ``.`` + the Biscuit.

    The root key travels with the token so that its holder can narrow it offline (this
    library appends blocks only to a token whose signatures it has checked); the box checks
    the token under the key it holds, never under the one written here."""
    key = base64.urlsafe_b64encode(bytes(root.to_bytes())).rstrip(b"=").decode()
    return f"{PREFIX}{key}.{token.to_base64().rstrip('=')}"


def split(wire: str) -> tuple[bytes, str]:
    """``(root public key bytes, the Biscuit in base64url)``; :class:`AttenuationError` if malformed."""
    if not is_narrowable(wire) or len(wire) > MAX_WIRE:
        raise UnreadableToken(f"not a narrowable invocation token (bsc1., at most {MAX_WIRE} characters)")
    key, dot, body = wire[len(PREFIX) :].partition(".")
    try:
        raw_key = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    except (binascii.Error, ValueError):
        raw_key = b""
    if not dot or len(raw_key) != 32 or not body:
        raise UnreadableToken("a narrowable token is bsc1.KEY.BISCUIT, in base64url")
    return raw_key, body + "=" * (-len(body) % 4)


def parse(wire: str, root: biscuit_auth.PublicKey | None = None) -> biscuit_auth.Biscuit:
    """The Biscuit, its signatures checked under ``root`` (default: the key it carries,
    which proves nothing about who made it: the box passes its own)."""
    return read(wire, root)[1]


def read(
    wire: str, root: biscuit_auth.PublicKey | None = None
) -> tuple[biscuit_auth.PublicKey, biscuit_auth.Biscuit]:
    """The key the token carries and the Biscuit checked under ``root`` (default: that key)."""
    raw_key, body = split(wire)
    carried = _public_key(raw_key)
    try:
        token = biscuit_auth.Biscuit.from_base64(body, carried if root is None else root)
    except (biscuit_auth.BiscuitValidationError, ValueError):
        raise UnreadableToken(
            "the token's signatures do not hold: it was altered, or made for another key"
        ) from None
    if token.block_count() > MAX_BLOCKS:
        raise UnreadableToken(f"a token has at most {MAX_BLOCKS - 1} blocks of caveats")
    return carried, token


def narrow(
    token: str,
    *,
    entries: Sequence[str] | None = None,
    uses: int | None = None,
    until: datetime | None = None,
    args: Sequence[Any] | None = None,
) -> str:
    """``token`` with one more block of caveats: only these entry points, at most ``uses``
    invocations (counted by the box), none after ``until``, and exactly these positional
    arguments (none by keyword). What is left out stays as ``token`` allowed it.

    Offline: nothing is sent anywhere. The result never allows more than ``token``.
    Raises :class:`UnreadableToken` for a token it cannot read, :class:`RefusedNarrowing`
    for caveats it cannot write (and TypeError or ValueError for an argument not JSON)."""
    key, root = read(token)  # one parse: the key it carries, and its checked blocks
    if entries is None and uses is None and until is None and args is None:
        raise RefusedNarrowing("a narrowing needs a caveat: entries, uses, until or args")
    index = root.block_count()
    if index >= MAX_BLOCKS:
        raise RefusedNarrowing(f"this token has {index - 1} blocks of caveats already, the most a box reads")
    block = biscuit_auth.BlockBuilder("")
    if entries is not None:
        if not entries:
            raise RefusedNarrowing("name at least one entry point")
        block.add_check(
            biscuit_auth.Check("check if entry($entry), {names}.contains($entry)", {"names": set(entries)})
        )
    if uses is not None:
        if isinstance(uses, bool) or not isinstance(uses, int) or uses < 1:
            raise RefusedNarrowing("uses is a whole number, at least 1")
        block.add_check(biscuit_auth.Check(f"check if use({index}, $n), $n <= {{uses}}", {"uses": uses}))
    if until is not None:
        if until.tzinfo is None:
            raise RefusedNarrowing("until must carry its time zone (datetime.now(timezone.utc) + ...)")
        block.add_check(biscuit_auth.Check("check if time($time), $time <= {until}", {"until": until}))
    if args is not None:
        block.add_check(biscuit_auth.Check(f"check if arg_count({len(args)}), kwarg_count(0)"))
        for position, value in enumerate(args):
            block.add_check(
                biscuit_auth.Check(f"check if arg({position}, {{value}})", {"value": as_text(value)})
            )
    return encode(key, root.append(block))


def counted_blocks(token: biscuit_auth.Biscuit) -> list[int]:
    """The blocks whose caveats count uses (``use(i, ...)``): the box keeps a count for each."""
    return [i for i in range(1, token.block_count()) if _USE.search(token.block_source(i))]


def as_text(value: Any) -> str:
    """An argument as a caveat and the box both write it: compact JSON with sorted keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _public_key(raw: bytes) -> biscuit_auth.PublicKey:
    return biscuit_auth.PublicKey(f"ed25519/{raw.hex()}")  # the one constructor its stubs and build share
