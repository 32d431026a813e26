"""What Browser sends its client: a header, the page's archive, then the padding.

    magic (8) | archive length (8) | padding length (8) | SHA-256 of the archive (32)

The header is fixed-size and comes first, so the client knows where the page ends: it
can unpack and show the page as soon as those bytes arrived, and then reads exactly the
announced padding before it does anything else (the next request must wait, or the
padding would not hide where the page ended).
"""

from __future__ import annotations

import re
import struct

MAGIC = b"BENTOPG\x01"
HEADER = struct.Struct(">8sQQ32s")


class WireError(ValueError):
    """The bytes are not a Browser transfer."""


def encode_header(archive_length: int, padding_length: int, digest: bytes) -> bytes:
    return HEADER.pack(MAGIC, archive_length, padding_length, digest)


def decode_header(data: bytes) -> tuple[int, int, bytes]:
    """(archive length, padding length, SHA-256 of the archive) from the first bytes."""
    if len(data) != HEADER.size:
        raise WireError(f"a Browser header has {HEADER.size} bytes, not {len(data)}")
    magic, archive_length, padding_length, digest = HEADER.unpack(data)
    if magic != MAGIC:
        raise WireError("the transfer does not start with a Browser header")
    return archive_length, padding_length, digest


# The engines a client may ask Browser for (its entry points' ``engine`` argument): the
# static one (fetch.crawl) and headless chromium (render.render).
ENGINES = ("static", "chromium")


# The cookies a client may send with a page (its entry points' ``cookies``): the user's own,
# for the page's host, as RFC 6265 spells them, and few and small enough to be one header.
MAX_COOKIES = 50
MAX_COOKIE_BYTES = 8192
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
_COOKIE_VALUE = re.compile(r'^"?[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]{0,4096}"?$')


def cookie_problem(cookies: object) -> str | None:
    """What is wrong with ``cookies`` (names to values), or None if Browser may send them.

    >>> cookie_problem({"session": "a1b2"}) is None, cookie_problem({"a b": "x"})
    (True, "the cookie name 'a b' is not a token of 1 to 64 characters")
    """
    if not isinstance(cookies, dict):
        return "cookies must be an object of names to string values"
    if len(cookies) > MAX_COOKIES:
        return f"at most {MAX_COOKIES} cookies, not {len(cookies)}"
    for name, value in cookies.items():
        if not isinstance(name, str) or not _COOKIE_NAME.match(name):
            return f"the cookie name {str(name)[:64]!r} is not a token of 1 to 64 characters"
        if not isinstance(value, str) or not _COOKIE_VALUE.match(value):
            return f"the value of the cookie {name!r} has characters a cookie may not hold, or is too long"
    if sum(len(name) + len(value) + 2 for name, value in cookies.items()) > MAX_COOKIE_BYTES:
        return f"the cookies come to more than {MAX_COOKIE_BYTES} bytes"
    return None
