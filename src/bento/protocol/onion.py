"""v3 onion addresses and the Ed25519 keys behind them (rend-spec-v3, "ONIONADDRESS").

A Bento box has one long-term Ed25519 key. Its public half *is* the box's onion
address, and the same key signs the box's descriptor: a client that learns the onion
address from the relay's own (relay-signed) descriptor can verify the Bento descriptor
with nothing else.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bento.errors import BentoError

_VERSION = b"\x03"


def onion_address(public_key: bytes) -> str:
    """The 56-character v3 onion address (without ``.onion``) of an Ed25519 public key."""
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + _VERSION).digest()[:2]
    return base64.b32encode(public_key + checksum + _VERSION).decode().lower()


def public_key_of(address: str) -> Ed25519PublicKey:
    """The Ed25519 key an onion address stands for; BentoError if it is not a valid one."""
    label = address.lower().removesuffix(".onion")
    try:
        raw = base64.b32decode(label.upper())
    except ValueError:
        raise BentoError(f"{address!r} is not a v3 onion address") from None
    if len(raw) != 35 or raw[-1:] != _VERSION or onion_address(raw[:32]) != label:
        raise BentoError(f"{address!r} is not a valid v3 onion address (bad length or checksum)")
    return Ed25519PublicKey.from_public_bytes(raw[:32])


def is_onion_address(text: str) -> bool:
    try:
        public_key_of(text)
    except BentoError:
        return False
    return True


def address_of(key: Ed25519PrivateKey) -> str:
    return onion_address(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def tor_key_blob(seed: bytes) -> str:
    """The key as tor's ADD_ONION wants it: ``ED25519-V3:`` + base64 of the expanded key.

    Tor keeps the expanded form (the clamped scalar and the nonce prefix, both halves of
    SHA-512 of the seed); signatures made from the seed verify under the same public key.
    """
    digest = bytearray(hashlib.sha512(seed).digest())
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    return "ED25519-V3:" + base64.b64encode(bytes(digest)).decode()


def verify(address: str, signature: bytes, message: bytes) -> None:
    """Raise BentoError unless ``signature`` over ``message`` was made by ``address``'s key."""
    try:
        public_key_of(address).verify(signature, message)
    except InvalidSignature:
        raise BentoError(
            f"the descriptor's signature does not match {address}.onion",
            fix="the box may be impersonated or misconfigured; do not use it",
        ) from None
