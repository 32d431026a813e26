"""Tor's client authorization for v3 onion services: who may reach a service at all.

The client makes an X25519 key pair; the service is published with the public half, and
the client's tor holds the private half in its ``ClientOnionAuthDir``, one file per
service (``NAME.auth_private``) whose one line is ``<address>:descriptor:x25519:<key>``,
both keys in unpadded base32 (tor's rend-spec-v3, "Client authorization"):

>>> key = ClientKey.new()
>>> len(key.public), key.line("q" * 56).count(":")
(52, 3)
>>> ClientKey.parse(key.line("q" * 56)) == (key, "q" * 56)
True
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class ClientKey:
    """A client's X25519 private key (32 bytes); ``repr`` keeps it out of logs."""

    private: bytes

    def __repr__(self) -> str:
        return f"ClientKey(public={self.public[:8]}…)"

    @classmethod
    def new(cls) -> ClientKey:
        raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(raw)

    @property
    def public(self) -> str:
        """The public half, as a service is published with it (52 base32 characters)."""
        key = X25519PrivateKey.from_private_bytes(self.private).public_key()
        return _b32(key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def line(self, onion: str) -> str:
        """The ``.auth_private`` line that lets a client's tor reach ``onion``."""
        return f"{onion.removesuffix('.onion')}:descriptor:x25519:{_b32(self.private)}"

    @classmethod
    def parse(cls, line: str) -> tuple[ClientKey, str]:
        """The key and the onion address of an ``.auth_private`` line; ValueError if it is not one."""
        onion, kind, algorithm, encoded = [*line.strip().split(":"), "", "", ""][:4]
        if kind != "descriptor" or algorithm != "x25519" or len(onion) != 56:
            raise ValueError("not an .auth_private line (ADDRESS:descriptor:x25519:KEY)")
        try:
            raw = base64.b32decode(encoded.upper() + "=" * (-len(encoded) % 8))
        except (binascii.Error, ValueError):
            raise ValueError("its key is not base32") from None
        if len(raw) != 32:
            raise ValueError("its key is not 32 bytes")
        return cls(raw), onion
