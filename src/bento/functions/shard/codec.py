"""A file as N sealed shards, any K of which give it back.

RaptorQ (RFC 6330, the ``raptorq`` package) turns the file's ``S`` source symbols into as
many encoding packets as we ask for; any ``S`` of them decode with high probability, and
any ``S + 2`` all but surely (RFC 6330 §5.6: a failure rate under 10^-6 at overhead 2, and
each further symbol divides it by about 100). Each shard gets the same number of packets
``p``, chosen so that any K shards hold at least ``S + OVERHEAD`` distinct ones.

Each shard is sealed with ChaCha20-Poly1305 under the file's key, with the file's id, the
shard's index and the code's shape as associated data: a box that alters its shard, or
hands back another shard (of this file or of another), is caught before the decoder sees a
byte. Only authenticated packets ever reach the decoder.

>>> key, file_id = bytes(32), bytes(16)
>>> code = Code.for_file(5, n=3, k=2)
>>> shards = [seal(key, file_id, code, i, s) for i, s in enumerate(encode(b"hello", code))]
>>> decode(code, {2: open_shard(key, file_id, code, 2, shards[2]),
...               0: open_shard(key, file_id, code, 0, shards[0])})
b'hello'
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import raptorq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bento.errors import BentoError

OVERHEAD = 4  # symbols beyond S that any K shards hold: failure odds ~10^-10 per block
MAX_SHARDS = 255
HEADER = 4  # RaptorQ's payload id before each symbol: source block number, symbol id
NONCE = 12
ALIGN = 8  # the symbol alignment raptorq's defaults use
MAX_SYMBOL = 65528  # a multiple of ALIGN below RFC 6330's 16-bit symbol size
MIN_SYMBOL = 64
TARGET_SYMBOLS = 1024  # enough symbols per file that K-of-N costs little above N/K


class ShardError(BentoError):
    """A shard that cannot be used: altered, swapped, or not of this file."""


@dataclass(frozen=True)
class Code:
    """The code's shape: file length, symbol size, shards and how many rebuild the file."""

    length: int
    symbol: int
    n: int
    k: int

    @classmethod
    def for_file(cls, length: int, *, n: int, k: int) -> Code:
        if length <= 0:
            raise BentoError("there is nothing to shard: the file is empty")
        if not 1 <= k <= n <= MAX_SHARDS:
            raise BentoError(f"--k must be at least 1 and at most --n, and --n at most {MAX_SHARDS}")
        wanted = -(-length // TARGET_SYMBOLS)
        symbol = min(MAX_SYMBOL, max(MIN_SYMBOL, -(-wanted // ALIGN) * ALIGN))
        return cls(length, symbol, n, k)

    def check(self) -> None:
        """Refuse a shape no encoder made (from a manifest someone edited)."""
        ok = (
            self.length > 0
            and MIN_SYMBOL <= self.symbol <= MAX_SYMBOL
            and self.symbol % ALIGN == 0
            and 1 <= self.k <= self.n <= MAX_SHARDS
        )
        if not ok:
            raise BentoError("the manifest's code parameters are not ones Bento writes")

    @property
    def packet(self) -> int:
        return HEADER + self.symbol

    def associated(self, file_id: bytes, index: int) -> bytes:
        return (
            b"bento-shard/1"
            + file_id
            + struct.pack(">QIBBB", self.length, self.symbol, self.n, self.k, index)
        )


def encode(data: bytes, code: Code) -> list[bytes]:
    """The ``code.n`` shards of ``data`` (plaintext: the packets each shard carries, joined)."""
    encoder = raptorq.Encoder.with_defaults(data, code.symbol)
    sources: dict[int, int] = {}
    for packet in encoder.get_encoded_packets(0):
        sources[packet[0]] = sources.get(packet[0], 0) + 1
    # Per block: p packets per shard, so that any k shards hold S + OVERHEAD of them.
    per_shard = {block: -(-(s + OVERHEAD) // code.k) for block, s in sources.items()}
    repair = max(code.n * per_shard[b] - s for b, s in sources.items())
    shards: list[list[bytes]] = [[] for _ in range(code.n)]
    dealt = dict.fromkeys(sources, 0)
    for packet in encoder.get_encoded_packets(repair):
        block = packet[0]
        turn = dealt[block]
        if turn < code.n * per_shard[block]:
            shards[turn % code.n].append(packet)
        dealt[block] = turn + 1
    return [b"".join(packets) for packets in shards]


def seal(key: bytes, file_id: bytes, code: Code, index: int, shard: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, shard, code.associated(file_id, index))


def open_shard(key: bytes, file_id: bytes, code: Code, index: int, sealed: bytes) -> bytes:
    """The shard's plaintext; ShardError if it is not exactly what was sealed as shard ``index``."""
    try:
        plain = ChaCha20Poly1305(key).decrypt(sealed[:NONCE], sealed[NONCE:], code.associated(file_id, index))
    except (InvalidTag, ValueError):
        raise ShardError(
            f"shard {index} failed authentication: its box altered it or gave back another"
        ) from None
    if len(plain) % code.packet:
        raise ShardError(f"shard {index} is not a whole number of packets")
    return plain


class Decoder:
    """Takes opened shards one by one; ``feed`` answers the file as soon as it decodes."""

    def __init__(self, code: Code) -> None:
        code.check()
        self.code = code
        self._decoder = raptorq.Decoder.with_defaults(code.length, code.symbol)
        self.done: bytes | None = None

    def feed(self, shard: bytes) -> bytes | None:
        size = self.code.packet
        for start in range(0, len(shard), size):
            if self.done is not None:
                break
            self.done = self._decoder.decode(shard[start : start + size])
        return self.done


def decode(code: Code, shards: dict[int, bytes] | Iterable[tuple[int, bytes]]) -> bytes:
    """The file from opened shards; ShardError if they are too few."""
    decoder = Decoder(code)
    for _, shard in shards.items() if isinstance(shards, dict) else shards:
        if (data := decoder.feed(shard)) is not None:
            return data
    raise ShardError(f"these shards are too few to rebuild the file (it takes {code.k} of {code.n})")
