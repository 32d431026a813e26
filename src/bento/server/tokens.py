"""Capability tokens: 256-bit random strings; the server keeps only their hashes.

A token is a capability, not an identity: whoever holds it may do the one thing it is
for. Hashes are compared in constant time, and a token never reaches a log or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def new_id() -> str:
    # Hex, not URL-safe base64: an id is typed on command lines, and one that began with "-"
    # would be read as an option (`bento logs -nz6H...` failed exactly so).
    return secrets.token_hex(16)  # 128 bits, for function and session ids


def digest(token: str) -> bytes:
    # Tokens carry 256 bits of entropy, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).digest()


def matches(token: str | None, expected: bytes) -> bool:
    return token is not None and hmac.compare_digest(digest(token), expected)


class Payment(Protocol):
    """A use of a token set aside for one invocation: spent once its instance exists, else given back."""

    def spend(self) -> None: ...

    def release(self) -> None: ...
