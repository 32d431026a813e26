"""RSA blind signatures (RFC 9474), on ``cryptography``'s RSA keys.

A signer signs a message it never sees; the signature it gives back verifies as an ordinary
RSASSA-PSS signature (RFC 8017), and the signer cannot later tell which of its signings
produced it. Bento's blinded tokens (:mod:`bento.protocol.private_token`) are built on it.

No maintained Python package implements RFC 9474, so this module does, and keeps to the RFC's
own words: ``prepare`` (section 4.1), ``blind`` (4.2), ``blind_sign`` (4.3), ``finalize``
(4.4), the four named variants (section 5), and it is tested against the RFC's Appendix A
vectors. Verification is ``cryptography``'s own RSASSA-PSS, not ours, so a mistake in our
encoding cannot also hide in our verifier.

    >>> from cryptography.hazmat.primitives.asymmetric import rsa
    >>> key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    >>> variant = PSS_DETERMINISTIC
    >>> msg = prepare(b"a token input with 32 random bytes in it", variant)
    >>> blinded, inv = blind(key.public_key(), msg, variant)        # client
    >>> blind_sig = blind_sign(key, blinded)                         # signer: sees only `blinded`
    >>> sig = finalize(key.public_key(), msg, blind_sig, inv, variant)   # client
    >>> verify(key.public_key(), msg, sig, variant)                  # anyone; raises if invalid

API::

    Variant                          hash, salt length and randomisation of a named variant
      PSS_RANDOMIZED, PSSZERO_RANDOMIZED, PSS_DETERMINISTIC, PSSZERO_DETERMINISTIC
    prepare(msg, variant)            -> the message actually signed (32 random bytes first if randomised)
    blind(public_key, msg, variant)  -> (blinded_msg, inv)
    blind_sign(private_key, blinded) -> blind_sig
    finalize(public_key, msg, blind_sig, inv, variant) -> sig
    verify(public_key, msg, sig, variant)  raises BlindSignatureError
    BlindSignatureError              every failure, with the RFC's error name in its message

Side channels: Python's integers are not constant-time. ``blind_sign`` therefore blinds the
base itself with a fresh random factor before the private-key operation (classic RSA
blinding), so the time it takes does not depend on anything the requester chose, and checks
its own output (``s^e == m``) so that a fault cannot leak the key (RFC 9474, section 7.4).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_HASH_LEN = 48  # SHA-384
_PREFIX_LEN = 32  # RFC 9474, section 4.1: the randomiser prepended to the message


class BlindSignatureError(ValueError):
    """A blind-signature step failed; the message names the RFC's error."""


@dataclass(frozen=True)
class Variant:
    """One of RFC 9474's named variants (section 5); all use SHA-384 and MGF1-SHA-384."""

    name: str
    salt_length: int
    randomized: bool


PSS_RANDOMIZED = Variant("RSABSSA-SHA384-PSS-Randomized", _HASH_LEN, True)
PSSZERO_RANDOMIZED = Variant("RSABSSA-SHA384-PSSZERO-Randomized", 0, True)
PSS_DETERMINISTIC = Variant("RSABSSA-SHA384-PSS-Deterministic", _HASH_LEN, False)
PSSZERO_DETERMINISTIC = Variant("RSABSSA-SHA384-PSSZERO-Deterministic", 0, False)
VARIANTS = (PSS_RANDOMIZED, PSSZERO_RANDOMIZED, PSS_DETERMINISTIC, PSSZERO_DETERMINISTIC)


def prepare(msg: bytes, variant: Variant, *, prefix: bytes | None = None) -> bytes:
    """The message that is blinded, signed and verified (RFC 9474, section 4.1).

    ``prefix`` is for test vectors only: in use it is 32 fresh random bytes.
    """
    if not variant.randomized:
        return msg
    prefix = secrets.token_bytes(_PREFIX_LEN) if prefix is None else prefix
    if len(prefix) != _PREFIX_LEN:
        raise BlindSignatureError(f"the message prefix must be {_PREFIX_LEN} bytes")
    return prefix + msg


def blind(
    public_key: rsa.RSAPublicKey,
    msg: bytes,
    variant: Variant,
    *,
    salt: bytes | None = None,
    inv: int | None = None,
) -> tuple[bytes, int]:
    """Encode and blind ``msg`` (already prepared); returns ``(blinded_msg, inv)``.

    ``salt`` and ``inv`` are for test vectors only: in use both are fresh random values.
    """
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    k_len = _byte_length(n)
    salt = secrets.token_bytes(variant.salt_length) if salt is None else salt
    if len(salt) != variant.salt_length:
        raise BlindSignatureError(f"the salt must be {variant.salt_length} bytes for {variant.name}")
    m = int.from_bytes(_emsa_pss_encode(msg, n.bit_length() - 1, salt), "big")
    if inv is None:
        r = _random_unit(n)
        inv = pow(r, -1, n)
    else:
        try:
            r = pow(inv, -1, n)
        except ValueError:
            raise BlindSignatureError("invalid blind") from None
    z = (m * pow(r, e, n)) % n
    return z.to_bytes(k_len, "big"), inv


def blind_sign(private_key: rsa.RSAPrivateKey, blinded_msg: bytes) -> bytes:
    """The signer's step (RFC 9474, section 4.3): the raw RSA private-key operation."""
    private = private_key.private_numbers()
    n, e = private.public_numbers.n, private.public_numbers.e
    k_len = _byte_length(n)
    if len(blinded_msg) != k_len:
        raise BlindSignatureError(f"unexpected input size: the blinded message must be {k_len} bytes")
    m = int.from_bytes(blinded_msg, "big")
    if m >= n:
        raise BlindSignatureError("invalid message: not an integer below the modulus")
    # Blind the base again, with a factor the requester cannot know, before touching d.
    r = _random_unit(n)
    masked = (m * pow(r, e, n)) % n
    s_p = pow(masked % private.p, private.dmp1, private.p)
    s_q = pow(masked % private.q, private.dmq1, private.q)
    s = (s_q + private.q * ((private.iqmp * (s_p - s_q)) % private.p)) * pow(r, -1, n) % n
    if pow(s, e, n) != m:  # a fault in the private operation must never leave the box
        raise BlindSignatureError("signing failed its own check")
    return s.to_bytes(k_len, "big")


def finalize(public_key: rsa.RSAPublicKey, msg: bytes, blind_sig: bytes, inv: int, variant: Variant) -> bytes:
    """Unblind the signer's answer and check it (RFC 9474, section 4.4); returns the signature."""
    n = public_key.public_numbers().n
    k_len = _byte_length(n)
    if len(blind_sig) != k_len:
        raise BlindSignatureError(f"unexpected input size: the blind signature must be {k_len} bytes")
    z = int.from_bytes(blind_sig, "big")
    sig = ((z * inv) % n).to_bytes(k_len, "big")
    verify(public_key, msg, sig, variant)
    return sig


def verify(public_key: rsa.RSAPublicKey, msg: bytes, sig: bytes, variant: Variant) -> None:
    """Check an (unblinded) signature as RSASSA-PSS with the variant's parameters."""
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=variant.salt_length)
    try:
        public_key.verify(sig, msg, pss, hashes.SHA384())
    except InvalidSignature:
        raise BlindSignatureError("invalid signature") from None


# --- RFC 8017 building blocks ----------------------------------------------------------


def _emsa_pss_encode(msg: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE with SHA-384 and MGF1-SHA-384 (RFC 8017, section 9.1.1)."""
    em_len = (em_bits + 7) // 8
    if em_len < _HASH_LEN + len(salt) + 2:
        raise BlindSignatureError("encoding error: the key is too small for this salt")
    m_hash = hashlib.sha384(msg).digest()
    h = hashlib.sha384(b"\x00" * 8 + m_hash + salt).digest()
    db = b"\x00" * (em_len - len(salt) - _HASH_LEN - 2) + b"\x01" + salt
    masked = bytes(a ^ b for a, b in zip(db, _mgf1(h, len(db)), strict=True))
    clear_bits = 8 * em_len - em_bits
    masked = bytes([masked[0] & (0xFF >> clear_bits)]) + masked[1:]
    return masked + h + b"\xbc"


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b"".join(
        hashlib.sha384(seed + counter.to_bytes(4, "big")).digest()
        for counter in range((length + _HASH_LEN - 1) // _HASH_LEN)
    )
    return out[:length]


def _random_unit(n: int) -> int:
    """A uniform random integer in [1, n) that is invertible mod n (rejection sampling)."""
    while True:
        r = secrets.randbelow(n - 1) + 1
        try:
            pow(r, -1, n)
        except ValueError:
            continue
        return r


def _byte_length(n: int) -> int:
    return (n.bit_length() + 7) // 8
