"""What Browser sends its client: a header, the page's archive, then the padding.

    magic (8) | archive length (8) | padding length (8) | SHA-256 of the archive (32)

The header is fixed-size and comes first, so the client knows where the page ends: it
can unpack and show the page as soon as those bytes arrived, and then reads exactly the
announced padding before it does anything else (the next request must wait, or the
padding would not hide where the page ended).
"""

from __future__ import annotations

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
