"""The client's defences against a box that chose its token key to link tokens (RFC 9474, 4.2 and 7).

A box chooses the key it blind-signs under. With a modulus that has small prime factors, the
blinded value it sees at issue (``z = m * r^e``) and the message it recovers at spending
(``m = s^e``) share the same small factors with ``n``: matching ``gcd(z, n)`` with
``gcd(m, n)`` links a spent token to its issuance. A proof of concept of issue 19 linked 35 of
50 tokens so; the simpler one here, by the gcd alone, links about 8. These tests run it
against the client.
"""

from __future__ import annotations

import secrets

import gmpy2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bento.protocol import blind_rsa, private_token
from bento.protocol.blind_rsa import BlindSignatureError
from bento.protocol.private_token import TokenError, TokenRequest

E = 65537
TOKENS = 50


def _crafted_key(bits: int = 2048) -> tuple[rsa.RSAPublicKey, list[int]]:
    """A modulus of exactly ``bits`` bits: the odd primes below 1000 times one large prime.
    The box knows every factor, so it can still sign: every token it issues verifies."""
    small = [p for p in range(3, 1000) if gmpy2.is_prime(p)]
    product = 1
    for p in small:
        product *= p
    while True:
        least = (1 << (bits - 1)) // product
        large = int(gmpy2.next_prime(least + secrets.randbits(least.bit_length() - 8)))
        n = product * large
        if n.bit_length() == bits and (large - 1) % E:
            return rsa.RSAPublicNumbers(E, n).public_key(), [*small, large]


def _sign_with_factors(z: bytes, n: int, factors: list[int]) -> bytes:
    lam = 1
    for p in factors:
        lam = lam * (p - 1) // int(gmpy2.gcd(lam, p - 1))
    d = pow(E, -1, lam)
    return pow(int.from_bytes(z, "big"), d, n).to_bytes(len(z), "big")


def _links(issued: list[bytes], spent: list[bytes], n: int) -> int:
    """How many spent messages the box ties to exactly their own issuance by the gcd with n."""
    at_issue = [int(gmpy2.gcd(int.from_bytes(z, "big"), n)) for z in issued]
    linked = 0
    for index, m in enumerate(spent):
        seen = int(gmpy2.gcd(int.from_bytes(m, "big"), n))
        if seen != 1 and at_issue.count(seen) == 1 and at_issue.index(seen) == index:
            linked += 1
    return linked


def test_a_box_with_a_crafted_modulus_cannot_have_a_token_blinded() -> None:
    public, _ = _crafted_key()
    assert public.key_size == private_token.KEY_BITS  # the size alone passed before
    with pytest.raises(TokenError, match="prime factor below"):
        TokenRequest.new(public, "fn", "invoke")


def test_the_gcd_linking_attack_links_nothing_even_past_the_key_check() -> None:
    """Were the key check skipped, the coprimality check alone leaves the gcd nothing to read."""
    public, factors = _crafted_key()
    n = public.public_numbers().n
    variant = private_token.VARIANT
    issued: list[bytes] = []
    spent: list[bytes] = []
    refused = 0
    while len(issued) < TOKENS:
        message = secrets.token_bytes(98)
        try:
            blinded, inv = blind_rsa.blind(public, message, variant)
        except BlindSignatureError as exc:  # a client retries with a fresh message
            assert "not coprime" in str(exc)
            refused += 1
            continue
        sig = blind_rsa.finalize(public, message, _sign_with_factors(blinded, n, factors), inv, variant)
        issued.append(blinded)
        spent.append(pow(int.from_bytes(sig, "big"), E, n).to_bytes(len(sig), "big"))  # m = s^e
    assert refused > TOKENS  # most encodings share a small factor with this n: never shown to the box
    assert all(gmpy2.gcd(int.from_bytes(z, "big"), n) == 1 for z in issued)
    assert _links(issued, spent, n) == 0


def test_the_attack_does_link_without_the_checks() -> None:
    """The proof of concept itself: what the box learns from messages it should never have seen."""
    public, factors = _crafted_key()
    n = public.public_numbers().n
    issued, spent = [], []
    for _ in range(TOKENS):
        m = int.from_bytes(secrets.token_bytes(255), "big")
        r = secrets.randbelow(n - 2) + 2
        while gmpy2.gcd(r, n) != 1:
            r = secrets.randbelow(n - 2) + 2
        issued.append((m * pow(r, E, n) % n).to_bytes(256, "big"))
        spent.append(m.to_bytes(256, "big"))
    assert _sign_with_factors(issued[0], n, factors)  # the box can sign under this key
    assert _links(issued, spent, n) >= 3  # about 8 of 50 (6 to 10 in ten runs) by the gcd alone


def _public(n: int, e: int = E) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(e, n).public_key()


def _prime(bits: int) -> int:
    """A prime of ``bits`` bits whose top two bits are set (so a square of it has 2 * bits)."""
    return int(gmpy2.next_prime(secrets.randbits(bits) | (3 << (bits - 2))))


def _with_a_small_factor() -> int:
    small = 1_000_003  # a prime below 2^20
    return small * int(gmpy2.next_prime((1 << 2047) // small + secrets.randbits(1000)))


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: rsa.generate_private_key(public_exponent=3, key_size=2048).public_key(), "exponent is 3"),
        (lambda: rsa.generate_private_key(public_exponent=E, key_size=3072).public_key(), "3072 bits"),
        (lambda: _public(_prime(1024) ** 2), "not a product of distinct"),
        (lambda: _public(_prime(2048)), "not a product of distinct"),
        (lambda: _public(_with_a_small_factor()), "prime factor below"),
    ],
    ids=["exponent-3", "wrong-size", "perfect-square", "prime", "small-factor"],
)
def test_the_client_refuses_keys_it_must_not_blind_under(make, problem: str) -> None:
    public = make()
    with pytest.raises(BlindSignatureError, match=problem):
        blind_rsa.check_public_key(public, 2048)


def test_a_sound_key_passes_and_blinds() -> None:
    key = rsa.generate_private_key(public_exponent=E, key_size=2048)
    blind_rsa.check_public_key(key.public_key(), 2048)
    pending = TokenRequest.new(key.public_key(), "fn", "invoke")
    wire = pending.finalize(blind_rsa.Signer(key).sign(pending.blinded))
    private_token.Token.parse(wire).check(key.public_key(), "fn", "invoke")


def test_a_message_sharing_a_factor_with_the_modulus_is_never_blinded() -> None:
    public, _ = _crafted_key()
    n = public.public_numbers().n
    for _ in range(200):
        try:
            blinded, _inv = blind_rsa.blind(public, secrets.token_bytes(40), private_token.VARIANT)
        except BlindSignatureError as exc:
            assert "invalid input" in str(exc)
            continue
        assert gmpy2.gcd(int.from_bytes(blinded, "big"), n) == 1
