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
    >>> check_public_key(key.public_key(), 2048)                    # client: a sound key first
    >>> msg = prepare(b"a token input with 32 random bytes in it", variant)
    >>> blinded, inv = blind(key.public_key(), msg, variant)        # client
    >>> blind_sig = Signer(key).sign(blinded)                        # signer: sees only `blinded`
    >>> sig = finalize(key.public_key(), msg, blind_sig, inv, variant)   # client
    >>> verify(key.public_key(), msg, sig, variant)                  # anyone; raises if invalid

API::

    Variant                          hash, salt length and randomisation of a named variant
      PSS_RANDOMIZED, PSSZERO_RANDOMIZED, PSS_DETERMINISTIC, PSSZERO_DETERMINISTIC
    check_public_key(public_key, bits)  raises unless the key is one a client may blind under
    prepare(msg, variant)            -> the message actually signed (32 random bytes first if randomised)
    blind(public_key, msg, variant)  -> (blinded_msg, inv)
    Signer(private_key).sign(blinded) -> blind_sig
    finalize(public_key, msg, blind_sig, inv, variant) -> sig
    verify(public_key, msg, sig, variant)  raises BlindSignatureError
    BlindSignatureError              every failure, with the RFC's error name in its message

The client's protection is the key check and the coprimality check (section 4.2, steps 4-5).
Blinding hides a message only when the key is a real RSA key: a box that published a modulus
with small factors could read ``gcd(blinded, n)`` at issue and ``gcd(s^e, n)`` at spending and
match the two (a proof of concept linked 35 of 50 tokens so). ``check_public_key`` refuses
such a key (exponent 65537, the exact size, odd, no prime factor below 2^20, not prime, not a
perfect power), and ``blind`` refuses a message that shares a factor with n, so what the box
sees at issue and at spending is always coprime with n and tells it nothing.

Side channels: ``cryptography`` exposes no raw RSA private-key operation (its keys only sign
with padding and decrypt with padding checks), so the signer's exponentiations are GMP's
``mpz_powm_sec`` (through ``gmpy2.powmod_sec``), made for cryptography: its time and memory
accesses depend on neither base nor exponent. The base is also blinded with a fresh random
factor, so the steps around it (reductions, the CRT recombination), which GMP does in
variable time, work on values unrelated to the requester's input. The key's numbers are read
once, when the :class:`Signer` is made. The signer checks its own output (``s^e == m``), so a
fault cannot leak the key (RFC 9474, section 7.4).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from functools import cache

import gmpy2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_HASH_LEN = 48  # SHA-384
_PREFIX_LEN = 32  # RFC 9474, section 4.1: the randomiser prepended to the message
PUBLIC_EXPONENT = 65537
SMALL_PRIMES_BELOW = 1 << 20  # a client refuses a modulus with a prime factor below this


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


def check_public_key(public_key: rsa.RSAPublicKey, bits: int) -> None:
    """Raise ``BlindSignatureError`` unless the key is a plausible RSA key of exactly ``bits`` bits.

    A client calls it before it blinds anything under a key it was sent: the box chose the
    key, and a modulus with small factors would let it link tokens to their issuance.
    """
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    if e != PUBLIC_EXPONENT:
        raise BlindSignatureError(f"invalid key: the public exponent is {e}, not {PUBLIC_EXPONENT}")
    if n.bit_length() != bits:
        raise BlindSignatureError(f"invalid key: the modulus has {n.bit_length()} bits, not {bits}")
    if n % 2 == 0 or gmpy2.gcd(n, _small_primes()) != 1:
        raise BlindSignatureError(f"invalid key: the modulus has a prime factor below {SMALL_PRIMES_BELOW}")
    if gmpy2.is_prime(n) or gmpy2.is_power(n):
        raise BlindSignatureError("invalid key: the modulus is not a product of distinct large primes")


@cache
def _small_primes() -> gmpy2.mpz:
    """The product of every prime below ``SMALL_PRIMES_BELOW`` (made once: 4 ms)."""
    return gmpy2.primorial(SMALL_PRIMES_BELOW - 1)


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
    if gmpy2.gcd(m, n) != 1:  # section 4.2, steps 4-5: never show the box a value sharing a factor with n
        raise BlindSignatureError("invalid input: the encoded message is not coprime with the modulus")
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


class Signer:
    """The signer's step (RFC 9474, section 4.3) with one private key, whose numbers are read once."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        private = private_key.private_numbers()
        self.public_key = private_key.public_key()
        self._n, self._e = gmpy2.mpz(private.public_numbers.n), gmpy2.mpz(private.public_numbers.e)
        self._p, self._q = gmpy2.mpz(private.p), gmpy2.mpz(private.q)
        self._dp, self._dq = gmpy2.mpz(private.dmp1), gmpy2.mpz(private.dmq1)
        self._q_inv = gmpy2.mpz(private.iqmp)
        self._k_len = _byte_length(private.public_numbers.n)

    def sign(self, blinded_msg: bytes) -> bytes:
        """The raw RSA private-key operation on ``blinded_msg``, in constant time (see the module)."""
        n, e, p, q = self._n, self._e, self._p, self._q
        if len(blinded_msg) != self._k_len:
            raise BlindSignatureError(
                f"unexpected input size: the blinded message must be {self._k_len} bytes"
            )
        m = gmpy2.mpz(int.from_bytes(blinded_msg, "big"))
        if m >= n:
            raise BlindSignatureError("invalid message: not an integer below the modulus")
        # Blind the base again, with a factor the requester cannot know, before touching d.
        r = _random_unit(int(n))
        masked = m * gmpy2.powmod(r, e, n) % n
        s_p = gmpy2.powmod_sec(masked % p, self._dp, p)
        s_q = gmpy2.powmod_sec(masked % q, self._dq, q)
        s = (s_q + q * (self._q_inv * (s_p - s_q) % p)) * gmpy2.invert(r, n) % n
        if gmpy2.powmod(s, e, n) != m:  # a fault in the private operation must never leave the box
            raise BlindSignatureError("signing failed its own check")
        return int(s).to_bytes(self._k_len, "big")


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
        if gmpy2.gcd(r, n) == 1:  # else draw again (section 4.2, steps 6-8)
            return r


def _byte_length(n: int) -> int:
    return (n.bit_length() + 7) // 8
