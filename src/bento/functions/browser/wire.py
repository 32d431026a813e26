"""What Browser sends its user: the page sealed under a key the user chose, then the padding.

    sealed header (24 + 16) | sealed archive (archive length + 16) | padding (padding length)

The client sends a fresh 32-byte key with its request, inside the session (never to a third
box). Browser seals under it as every sealed thing in Bento is sealed (``bento.runtime.sealing``:
ChaCha20-Poly1305, STREAM nonces): the header (magic, archive length, padding length) is
chunk 0, the archive the last chunk, 1; the padding is the ChaCha20 keystream of a key
derived from it (HKDF-SHA256), so the client checks every padding byte too. Whoever
carries the transfer (Tor's relays, a Dropbox that holds it for the user) sees its length
only: it can neither read the page nor change a byte of it unnoticed, and a page
sealed for someone else does not open.

    >>> key = new_key()
    >>> sent = seal(key, b"the archive", 5) + Padding(key).take(5)
    >>> archive_length, padding_length = open_header(key, sent[:SEALED_HEADER])
    >>> open_archive(key, sent[SEALED_HEADER : SEALED_HEADER + archive_length + TAG])
    b'the archive'
    >>> Padding(key).take(padding_length) == sent[-padding_length:]
    True

The header comes first and has a fixed size, so the client knows where the page ends: it
can unpack and show the page as soon as those bytes arrived, and then reads exactly the
announced padding before it does anything else (the next request must wait, or the
padding would not hide where the page ended).

``cryptography`` is imported when a page is sealed or opened: on a box, Browser needs the
box to offer it to functions (the testnet's boxes offer it with ``bento``).
"""

from __future__ import annotations

import re
import struct

from bento.runtime import sealing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext

MAGIC = b"BENTOPG\x03"
HEADER = struct.Struct(">8sQQ")  # the header inside its seal
TAG = sealing.TAG
SEALED_HEADER = HEADER.size + TAG
KEY_BYTES = sealing.KEY_BYTES
_AD = b"bento-browser-page"  # the associated data of both seals


class WireError(ValueError):
    """The bytes are not a Browser transfer sealed under this key."""


new_key, encode_key = sealing.new_key, sealing.encode_key


def decode_key(text: object) -> bytes:
    """The key from its unpadded base64url form; raises :class:`WireError` for anything else."""
    try:
        return sealing.decode_key(text)
    except sealing.SealError as exc:
        raise WireError(f"a page key: {exc}") from None


def seal(key: bytes, archive: bytes, padding_length: int) -> bytes:
    """The sealed header and the sealed archive (the box's side)."""
    header = HEADER.pack(MAGIC, len(archive), padding_length)
    return sealing.seal_chunk(key, 0, header, last=False, context=_AD) + sealing.seal_chunk(
        key, 1, archive, last=True, context=_AD
    )


def open_header(key: bytes, sealed: bytes) -> tuple[int, int]:
    """``(archive length, padding length)``; raises :class:`WireError` unless it opens."""
    if len(sealed) != SEALED_HEADER:
        raise WireError(f"a sealed Browser header has {SEALED_HEADER} bytes, not {len(sealed)}")
    magic, archive_length, padding_length = HEADER.unpack(_open(key, 0, sealed, last=False))
    if magic != MAGIC:
        raise WireError("the transfer is not a Browser page of this version")
    return archive_length, padding_length


def open_archive(key: bytes, sealed: bytes) -> bytes:
    """The archive; raises :class:`WireError` unless it opens under ``key``."""
    return _open(key, 1, sealed, last=True)


class Padding:
    """The padding's bytes: a keystream only the key's holders can make, so checkable."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        derived = HKDF(hashes.SHA256(), KEY_BYTES, None, b"bento-browser-padding").derive(key)
        self._stream: CipherContext = Cipher(algorithms.ChaCha20(derived, bytes(16)), None).encryptor()

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes of padding."""
        return self._stream.update(bytes(count))


def _open(key: bytes, index: int, sealed: bytes, *, last: bool) -> bytes:
    try:
        return sealing.open_chunk(key, index, sealed, last=last, context=_AD)
    except sealing.SealError:
        raise WireError(
            "the page does not open under your key: it was altered, or sealed for someone else"
        ) from None


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
