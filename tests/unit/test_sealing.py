"""bento.runtime.sealing: what a carrier does to sealed bytes, the recipient notices."""

from __future__ import annotations

import os

import pytest

from bento.runtime.sealing import (
    CHUNK,
    TAG,
    SealError,
    decode_key,
    encode_key,
    new_key,
    seal,
    sealed_size,
    unseal,
)

CONTEXT = b"bento-test"


@pytest.mark.parametrize("length", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_messages_of_every_length_round_trip(length: int) -> None:
    key, data = new_key(), os.urandom(length)
    sealed = seal(key, data, CONTEXT)
    assert len(sealed) == sealed_size(length) and unseal(key, sealed, CONTEXT) == data
    # The plaintext does not show in the sealed bytes; asked only of 16 bytes or more, as a
    # shorter random string turns up in 17+ random bytes by chance (1 byte: 6% of runs).
    assert len(data) < 16 or data[:64] not in sealed


def test_cut_reordered_altered_or_misnamed_messages_do_not_open() -> None:
    key, data = new_key(), os.urandom(3 * CHUNK + 100)
    sealed = seal(key, data, CONTEXT)
    step = CHUNK + TAG
    chunks = [sealed[i : i + step] for i in range(0, len(sealed), step)]
    flipped = bytearray(sealed)
    flipped[5] ^= 1
    for changed in (
        b"".join(chunks[:3]),  # cut at a chunk's end: the new last chunk says it is not the last
        b"".join(chunks[:3]) + chunks[3][:50],  # cut inside the last chunk
        b"".join([chunks[1], chunks[0], *chunks[2:]]),  # two chunks swapped
        b"".join([chunks[0], *chunks]),  # a chunk repeated
        bytes(flipped),
        sealed[: TAG - 1],
    ):
        with pytest.raises(SealError):
            unseal(key, changed, CONTEXT)
    with pytest.raises(SealError):
        unseal(key, sealed, b"another thing")
    with pytest.raises(SealError):
        unseal(new_key(), sealed, CONTEXT)


def test_keys_travel_as_43_base64url_characters() -> None:
    key = new_key()
    assert decode_key(encode_key(key)) == key and len(encode_key(key)) == 43
    for bad in ("", "a" * 42, "+" * 43, 43):
        with pytest.raises(SealError):
            decode_key(bad)
