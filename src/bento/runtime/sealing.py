"""Sealing bytes for their recipient: what a third party carries, it can neither read nor alter.

One way for all of Bento (a Dropbox deposit, a Browser page): ChaCha20-Poly1305 under a
fresh 256-bit key, in the STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár,
CRYPTO 2015): the message is cut into chunks, and chunk ``i`` is sealed with the nonce
``i`` (11 bytes) followed by one byte that says whether it is the last. So a chunk moved,
dropped, repeated or cut off after any chunk does not open: truncation and reordering are
detected, not only altered bytes. A key seals one message only (the nonces restart at 0).

    >>> key = new_key()
    >>> sealed = seal(key, b"a deposit", b"bento-example")
    >>> len(sealed) == sealed_size(9) == 9 + TAG
    True
    >>> unseal(key, sealed, b"bento-example")
    b'a deposit'
    >>> unseal(new_key(), sealed, b"bento-example")
    Traceback (most recent call last):
    ...
    bento.runtime.sealing.SealError: chunk 0 does not open: it was altered, cut, or sealed for someone else

``context`` (the AEAD's associated data) names what the bytes are, so bytes sealed as one
thing never open as another. ``cryptography`` is imported when something is sealed or
opened: inside a sandbox, only where the box offers it to functions.
"""

from __future__ import annotations

import base64
import re
import secrets

TYPE_CHECKING = False  # the runtime imports nothing but the standard library at start
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_BYTES = 32
TAG = 16  # Poly1305's, on every chunk
CHUNK = 64 << 10  # plaintext bytes of every chunk but the last
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]{43}$")


class SealError(ValueError):
    """The bytes do not open under this key and context: altered, cut, reordered, or not ours."""


def new_key() -> bytes:
    """A fresh 256-bit key: one for each message."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The key in unpadded base64url (43 characters): for a capability or a command line."""
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def decode_key(text: object) -> bytes:
    """The key from :func:`encode_key`'s form; raises :class:`SealError` for anything else."""
    if not isinstance(text, str) or len(text) != 43:
        raise SealError(f"a key is {KEY_BYTES} bytes in unpadded base64url (43 characters)")
    if not _BASE64URL.match(text):  # b64decode would take "+" and "/" too
        raise SealError("a key must be base64url")
    return base64.urlsafe_b64decode(text + "=")


def seal_chunk(key: bytes, index: int, data: bytes, *, last: bool, context: bytes) -> bytes:
    """Chunk ``index`` of a message, sealed (``len(data) + TAG`` bytes)."""
    return _aead(key).encrypt(_nonce(index, last), data, context)


def open_chunk(key: bytes, index: int, sealed: bytes, *, last: bool, context: bytes) -> bytes:
    """Chunk ``index`` opened; raises :class:`SealError` unless it is that chunk, sealed under ``key``."""
    from cryptography.exceptions import InvalidTag

    try:
        return _aead(key).decrypt(_nonce(index, last), sealed, context)
    except InvalidTag:
        raise SealError(
            f"chunk {index} does not open: it was altered, cut, or sealed for someone else"
        ) from None


def sealed_size(length: int) -> int:
    """The sealed size of a message of ``length`` bytes (an empty one is one empty chunk)."""
    return length + TAG * max(1, -(-length // CHUNK))


def seal(key: bytes, data: bytes, context: bytes) -> bytes:
    """The whole message, sealed in chunks of :data:`CHUNK` bytes."""
    starts = range(0, max(len(data), 1), CHUNK)
    return b"".join(
        seal_chunk(key, i, data[start : start + CHUNK], last=i == len(starts) - 1, context=context)
        for i, start in enumerate(starts)
    )


def unseal(key: bytes, sealed: bytes, context: bytes) -> bytes:
    """The message :func:`seal` sealed; raises :class:`SealError` unless every chunk opens,
    in its place, and the last one says it is the last."""
    if len(sealed) < TAG:
        raise SealError(f"{len(sealed)} bytes are too few to be sealed (a chunk has at least {TAG})")
    step = CHUNK + TAG
    starts = range(0, len(sealed), step)
    if len(sealed) - starts[-1] < TAG:  # a cut that left a stub of a chunk
        raise SealError("the sealed bytes end inside a chunk's tag: they were cut")
    return b"".join(
        open_chunk(key, i, sealed[start : start + step], last=i == len(starts) - 1, context=context)
        for i, start in enumerate(starts)
    )


def _aead(key: bytes) -> ChaCha20Poly1305:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    return ChaCha20Poly1305(key)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
