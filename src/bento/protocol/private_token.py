"""Blinded capability tokens: the Privacy Pass token structure over RFC 9474 signatures.

A plain Bento token is a random string the box issued, so the box knows which issuance a
token comes from. A *blinded* token is signed by the box without the box seeing it
(:mod:`bento.protocol.blind_rsa`), so when it is spent the box cannot tell which of its
issuances it was. Each token is good for one use.

The structure is Privacy Pass's token type 2 (RFC 9577 section 2.2, RFC 9578 section 6):
``token_type (2) | nonce (32) | challenge_digest (32) | token_key_id (32) | authenticator``,
where the authenticator is an RSABSSA-SHA384-PSS-Deterministic signature over everything
before it. Two choices are Bento's own:

- the *challenge* is fixed per function and right (``invoke`` or ``shutdown``), since a token
  is a capability for that right, not a reply to one origin's challenge;
- ``token_key_id`` is SHA-256 of the key's SubjectPublicKeyInfo as ``cryptography`` writes
  it (rsaEncryption), where RFC 9578 encodes the key as an RSASSA-PSS key.

On the wire a token is ``pt2.`` followed by the structure in unpadded base64url, and it goes
where a plain token goes (``Authorization: Bearer ...``).

    >>> from cryptography.hazmat.primitives.asymmetric import rsa
    >>> from bento.protocol import blind_rsa
    >>> key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    >>> pending = TokenRequest.new(key.public_key(), "fn-id", "invoke")
    >>> blind_sig = blind_rsa.Signer(key).sign(pending.blinded)       # the box, blind
    >>> wire = pending.finalize(blind_sig)                            # the client
    >>> token = Token.parse(wire)
    >>> token.check(key.public_key(), "fn-id", "invoke")              # the box, when it is spent
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bento.protocol import blind_rsa

Right = Literal["invoke", "shutdown"]
TOKEN_TYPE = 0x0002  # Privacy Pass: Blind RSA (2048-bit)
VARIANT = blind_rsa.PSS_DETERMINISTIC  # the nonce makes every input unique, as in RFC 9578
KEY_BITS = 2048
PREFIX = "pt2."
_NONCE, _DIGEST = 32, 32
_AUTH = KEY_BITS // 8
_BLIND_ATTEMPTS = (
    3  # fresh nonces tried when an encoded token shares a factor with n (never, for a sound key)
)
TOKEN_BYTES = 2 + _NONCE + _DIGEST + _DIGEST + _AUTH
MAX_WIRE = len(PREFIX) + (TOKEN_BYTES * 4 + 2) // 3


class TokenError(ValueError):
    """A token that is malformed, for another function or right, or not signed by the box."""


def key_id(public_key: rsa.RSAPublicKey) -> bytes:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return hashlib.sha256(public_key.public_bytes(der, spki)).digest()


def challenge_digest(function_id: str, right: Right) -> bytes:
    return hashlib.sha256(f"bento-token-v1\0{right}\0{function_id}".encode()).digest()


def is_blinded(bearer: str) -> bool:
    """Whether a bearer credential is a blinded token (rather than a plain one)."""
    return bearer.startswith(PREFIX)


@dataclass(frozen=True)
class Token:
    nonce: bytes
    challenge: bytes
    key: bytes
    authenticator: bytes

    @property
    def signed_part(self) -> bytes:
        return TOKEN_TYPE.to_bytes(2, "big") + self.nonce + self.challenge + self.key

    def encode(self) -> str:
        raw = self.signed_part + self.authenticator
        return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def parse(cls, wire: str) -> Token:
        if not wire.startswith(PREFIX) or len(wire) > MAX_WIRE:
            raise TokenError("not a blinded token")
        body = wire[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise TokenError("a blinded token must be base64url") from None
        if len(raw) != TOKEN_BYTES or int.from_bytes(raw[:2], "big") != TOKEN_TYPE:
            raise TokenError(f"a blinded token is {TOKEN_BYTES} bytes of token type {TOKEN_TYPE}")
        at = 2
        parts = []
        for size in (_NONCE, _DIGEST, _DIGEST, _AUTH):
            parts.append(raw[at : at + size])
            at += size
        return cls(*parts)

    def check(self, public_key: rsa.RSAPublicKey, function_id: str, right: Right) -> None:
        """Raise :class:`TokenError` unless this token is the box's, for this function and right."""
        if self.key != key_id(public_key):
            raise TokenError("the token was signed with another key")
        if self.challenge != challenge_digest(function_id, right):
            raise TokenError(f"the token is not a {right} token of this function")
        try:
            blind_rsa.verify(public_key, self.signed_part, self.authenticator, VARIANT)
        except blind_rsa.BlindSignatureError:
            raise TokenError("the token's signature is not valid") from None


@dataclass(frozen=True)
class TokenRequest:
    """A client's half-made token: what it sends (``blinded``) and what it keeps (``inv``)."""

    public_key: rsa.RSAPublicKey
    unsigned: Token
    blinded: bytes
    inv: int

    @classmethod
    def new(cls, public_key: rsa.RSAPublicKey, function_id: str, right: Right) -> TokenRequest:
        """A fresh token, blinded; raises :class:`TokenError` for a key a client must not blind under."""
        try:
            blind_rsa.check_public_key(public_key, KEY_BITS)
        except blind_rsa.BlindSignatureError as exc:
            raise TokenError(f"the box's token key is refused: {exc}") from None
        for attempt in range(_BLIND_ATTEMPTS):
            unsigned = Token(
                secrets.token_bytes(_NONCE), challenge_digest(function_id, right), key_id(public_key), b""
            )
            try:
                blinded, inv = blind_rsa.blind(public_key, unsigned.signed_part, VARIANT)
            except blind_rsa.BlindSignatureError as exc:  # RFC 9474 4.2, step 5: retry with another nonce
                if attempt == _BLIND_ATTEMPTS - 1:
                    raise TokenError(f"cannot blind a token under the box's key: {exc}") from None
                continue
            return cls(public_key, unsigned, blinded, inv)
        raise AssertionError("unreachable")

    def finalize(self, blind_sig: bytes) -> str:
        """The finished token, on the wire; raises :class:`TokenError` if the box's answer is bad."""
        try:
            sig = blind_rsa.finalize(self.public_key, self.unsigned.signed_part, blind_sig, self.inv, VARIANT)
        except blind_rsa.BlindSignatureError as exc:
            raise TokenError(f"the box's blind signature is not valid: {exc}") from None
        return Token(self.unsigned.nonce, self.unsigned.challenge, self.unsigned.key, sig).encode()
