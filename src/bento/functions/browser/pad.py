"""How many bytes the padded transfer has: to a multiple of a block, or Padmé.

The authors' published Browser pads with ``len + (len + padding) % padding`` once the
page is larger than ``padding``: that adds ``len % padding`` bytes, so a 1.2 MB page
padded to 1 MB sends 1.4 MB, which is no multiple of anything and leaks the page's size
exactly. Here the result is always the smallest multiple of the block that holds the
bytes (the bytes themselves when they are already one), and 0 means no padding.

Padmé is from Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
Communication with PURBs" (PETS 2019), Algorithm 1: keep the top ``S = floor(log2 E) + 1``
bits of the length's ``E = floor(log2 L)`` significant bits, round the rest up. Its
overhead is under 12% (the worst is 129 bytes -> 144, 11.6%) and it leaks O(log log L) bits.
"""

from __future__ import annotations

SCHEMES = ("multiple", "padme")


def to_multiple(length: int, block: int) -> int:
    """The smallest multiple of ``block`` that is at least ``length``; ``block`` 0: no padding."""
    if length < 0 or block < 0:
        raise ValueError("lengths and blocks are never negative")
    if block == 0 or length % block == 0:
        return length
    return length + block - length % block


def padme(length: int) -> int:
    """Padmé: the length rounded up so that only its top bits vary (PURBs, Algorithm 1)."""
    if length < 0:
        raise ValueError("lengths are never negative")
    if length < 2:  # log2 of E = 0 is undefined; 0 and 1 byte are their own sizes
        return length
    exponent = length.bit_length() - 1  # floor(log2 L)
    kept_bits = exponent.bit_length()  # floor(log2 E) + 1
    mask = (1 << (exponent - kept_bits)) - 1
    return (length + mask) & ~mask


def padded_size(length: int, scheme: str, block: int = 0) -> int:
    """The size of a transfer of ``length`` bytes padded with ``scheme``."""
    if scheme == "multiple":
        return to_multiple(length, block)
    if scheme == "padme":
        return padme(length)
    raise ValueError(f"unknown padding scheme {scheme!r} (known: {', '.join(SCHEMES)})")
