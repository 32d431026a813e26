"""The box's long-term Ed25519 key: its onion address, and the signer of its descriptor."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bento.protocol import onion

KEY_FILE = "identity.key"


@dataclass(frozen=True)
class Identity:
    seed: bytes

    @property
    def key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def onion(self) -> str:
        return onion.address_of(self.key)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def load_or_create(state_dir: Path) -> Identity:
    """The identity kept in ``state_dir``, made on first use (file mode 0600, like tor's keys)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / KEY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        seed = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(seed)
    if len(seed) != 32:
        raise ValueError(f"{path} is not a Bento identity key (expected 32 bytes)")
    return Identity(seed)
