"""The shard manifest: the one small file the user keeps, and everything ``get`` needs.

It names the boxes and holds the Dropbox capabilities and the file's key, so it is a secret
as a whole: it is created with mode 0600 from its first byte (``O_EXCL`` on a temporary
name in the same directory, then linked into place: an existing file is never replaced) and
it can be sealed with a passphrase (scrypt, then ChaCha20-Poly1305). Its ``repr`` names no
secret, so a traceback or a log line cannot leak one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bento.errors import BentoError

from .codec import Code

KIND = "bento-shard-manifest"
VERSION = 1
MAX_BYTES = 1 << 20  # a manifest is a few kB; anything larger is not one
# scrypt: 2^15 x 8 x 128 B = 32 MiB and ~0.1 s per guess on a laptop (RFC 7914's
# interactive setting is 2^14; we take twice that, the file is opened rarely).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1


class ShardRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, le=254)
    box: str  # the relay's nickname, for people
    fingerprint: str
    capability: str = Field(repr=False)  # the Dropbox capability: box, function, deposit, right, key
    bytes: int = Field(ge=0)


class ShardManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = KIND
    version: int = VERSION
    name: str  # the file's name when it was put, a default for get --out
    length: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    n: int
    k: int
    symbol: int
    file_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    key: str = Field(repr=False, pattern=r"^[0-9a-f]{64}$")
    created: float
    expires: float
    fetches: int | None = Field(default=None, ge=1)  # of each shard (None: put before it was kept)
    shards: list[ShardRecord]

    @property
    def code(self) -> Code:
        return Code(self.length, self.symbol, self.n, self.k)

    def allowed_gets(self) -> str:
        """How many gets this manifest allows in all, in words: each get uses up one fetch of
        each of K shards, and each of the N shards may be fetched ``fetches`` times.

        >>> m = ShardManifest.model_construct(n=5, k=3, fetches=1)
        >>> m.allowed_gets()
        'each of its 5 shards may be fetched 1 time(s) and a get takes 3: 1 get(s) in all'
        """
        if self.fetches is None:
            return f"a get takes {self.k} of its {self.n} shards; each may be fetched as often as put allowed"
        gets = self.n * self.fetches // self.k
        return (
            f"each of its {self.n} shards may be fetched {self.fetches} time(s) and a get takes "
            f"{self.k}: {'up to ' if gets > 1 else ''}{gets} get(s) in all"
        )


def encode(manifest: ShardManifest, passphrase: str | None = None) -> bytes:
    plain = manifest.model_dump_json(indent=2).encode()
    if passphrase is None:
        return plain + b"\n"
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = ChaCha20Poly1305(_derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
        nonce, plain, KIND.encode()
    )
    envelope = {
        "kind": KIND,
        "version": VERSION,
        "sealed": {
            "kdf": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": _b64(salt),
            "aead": "chacha20-poly1305",
            "nonce": _b64(nonce),
            "ciphertext": _b64(sealed),
        },
    }
    return json.dumps(envelope, indent=2).encode() + b"\n"


def is_sealed(raw: bytes) -> bool:
    with contextlib.suppress(ValueError, AttributeError):
        return "sealed" in json.loads(raw)
    return False


def decode(raw: bytes, passphrase: str | None = None) -> ShardManifest:
    """The manifest in ``raw``; a clear BentoError for a file that is not one, a sealed one
    without its passphrase, or a wrong passphrase."""
    not_one = BentoError(
        "that file is not a Bento shard manifest", fix="give the file `bento shard put` wrote"
    )
    if len(raw) > MAX_BYTES:
        raise not_one
    try:
        document: Any = json.loads(raw)
    except ValueError:
        raise not_one from None
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise not_one
    if document.get("version") != VERSION:
        raise BentoError(
            f"this shard manifest is of version {document.get('version')!r}; Bento reads {VERSION}"
        )
    if "sealed" in document:
        raw = _unseal(document["sealed"], passphrase)
    try:
        return ShardManifest.model_validate_json(raw)
    except ValidationError:
        raise not_one from None


def _unseal(sealed: Any, passphrase: str | None) -> bytes:
    if passphrase is None:
        raise BentoError("this shard manifest is sealed with a passphrase", fix="add --passphrase")
    try:
        n, r, p = int(sealed["n"]), int(sealed["r"]), int(sealed["p"])
        if sealed["kdf"] != "scrypt" or not (1 << 10 <= n <= 1 << 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError
        key = _derive(passphrase, base64.b64decode(sealed["salt"]), n, r, p)
        return ChaCha20Poly1305(key).decrypt(
            base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), KIND.encode()
        )
    except InvalidTag:
        raise BentoError(
            "wrong passphrase for this shard manifest (or the file was altered)",
            fix="try again with the passphrase given to `bento shard put`",
        ) from None
    except (KeyError, TypeError, ValueError):
        raise BentoError("this sealed shard manifest is damaged") from None


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path``, mode 0600 from the start, all or nothing;
    BentoError if ``path`` exists (a manifest is never overwritten: it may be the only key)."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # fails if path exists: never replaces another manifest
    except FileExistsError:
        raise BentoError(f"{path} exists already", fix="give another --manifest path") from None
    except OSError as exc:
        raise BentoError(f"cannot write the manifest {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            return source.read(MAX_BYTES + 1)
    except OSError as exc:
        raise BentoError(f"cannot read the manifest {path}: {exc.strerror}") from None
