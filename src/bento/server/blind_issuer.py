"""The box's side of blinded tokens: one signing key per function and right, and spent tokens.

Why a key per function and right rather than one per box: the box signs blind, so it cannot
see which function or right a token names. With one key per (function, right), a token can
only ever verify for the function and right whose key signed it, whatever its holder wrote
inside. The key is made on the first request, lives only in the server's memory, and dies
with the function (shutdown shreds the rights with the code); so do the spent tokens, which
the box must keep for as long as the key can verify.

Key consistency: a box that gave each requester its own key could link tokens to requests.
A function has exactly one key per right for its whole life, every answer names it
(``key_id``), and the client keeps it and refuses answers under another (see
``bento.client.blind_tokens``).

Issuance needs the plain capability for the same right (the invocation token for invoke
tokens, the shutdown token for shutdown tokens): whoever holds a right can hand out
single-use, unlinkable copies of it.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bento.protocol import blind_rsa, private_token
from bento.protocol.private_token import Right, Token, TokenError

MAX_BATCH = 32  # blind signatures in one request
MAX_ISSUED = 10_000  # per function and right: bounds the memory spent tokens can take


@dataclass
class _Key:
    signer: blind_rsa.Signer  # the private key's numbers, read once
    key_id: bytes
    issued: int = 0
    spent: set[bytes] = field(default_factory=set)  # SHA-256 of each spent token's nonce
    held: set[bytes] = field(default_factory=set)  # ... of each token a request in progress holds


class Hold:
    """A token set aside for one request: spent when the request is carried out, else given back.

    While it is held, nobody else can use it (two invocations with one token at once open one
    session); if what it pays for never happens (the sandbox fails to start), it is good again.
    """

    def __init__(self, key: _Key, nonce: bytes) -> None:
        self._key, self._nonce, self._settled = key, nonce, False
        key.held.add(nonce)

    def spend(self) -> None:
        if not self._settled:
            self._settled = True
            self._key.held.discard(self._nonce)
            self._key.spent.add(self._nonce)

    def release(self) -> None:
        if not self._settled:
            self._settled = True
            self._key.held.discard(self._nonce)


class BlindIssuer:
    """Blind signing keys of one function, by right; and the tokens already spent."""

    def __init__(self, function_id: str) -> None:
        self.function_id = function_id
        self._keys: dict[str, _Key] = {}
        self._making: dict[str, asyncio.Lock] = {"invoke": asyncio.Lock(), "shutdown": asyncio.Lock()}

    async def public_key(self, right: Right) -> tuple[bytes, bytes]:
        """``(SubjectPublicKeyInfo DER, key id)`` of the right's key, made on first use."""
        key = await self._key(right)
        spki = key.signer.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return spki, key.key_id

    async def sign(self, right: Right, blinded: list[bytes]) -> list[bytes]:
        """Blind-sign a batch; raises :class:`TokenError` for a batch too big or malformed."""
        if not 0 < len(blinded) <= MAX_BATCH:
            raise TokenError(f"ask for between 1 and {MAX_BATCH} tokens at a time")
        key = await self._key(right)
        if key.issued + len(blinded) > MAX_ISSUED:
            raise TokenError(f"this function has issued its {MAX_ISSUED} {right} tokens; deploy it again")
        key.issued += len(blinded)
        try:
            return await asyncio.to_thread(lambda: [key.signer.sign(b) for b in blinded])
        except blind_rsa.BlindSignatureError as exc:
            raise TokenError(str(exc)) from None

    def verify(self, wire: str, right: Right) -> None:
        """Raise :class:`TokenError` unless the token is good for ``right`` and not yet spent."""
        self._check(wire, right)

    def hold(self, wire: str, right: Right) -> Hold:
        """Check the token and set it aside for one request (see :class:`Hold`)."""
        return Hold(*self._check(wire, right))

    def _check(self, wire: str, right: Right) -> tuple[_Key, bytes]:
        key = self._keys.get(right)
        if key is None:
            raise TokenError(f"this function has issued no {right} tokens")
        token = Token.parse(wire)
        token.check(key.signer.public_key, self.function_id, right)
        nonce = hashlib.sha256(token.nonce).digest()
        if nonce in key.spent:
            raise TokenError("this token has been used already; each blinded token is good once")
        if nonce in key.held:
            raise TokenError("this token is being used by another request; each blinded token is good once")
        return key, nonce

    async def _key(self, right: Right) -> _Key:
        async with self._making[right]:
            if right not in self._keys:
                private = await asyncio.to_thread(
                    rsa.generate_private_key, public_exponent=65537, key_size=private_token.KEY_BITS
                )
                self._keys[right] = _Key(
                    blind_rsa.Signer(private), private_token.key_id(private.public_key())
                )
        return self._keys[right]
