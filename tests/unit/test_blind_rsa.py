"""RSA blind signatures (RFC 9474) against the RFC's own test vectors, and as a protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bento.protocol import blind_rsa
from bento.protocol.blind_rsa import BlindSignatureError

VECTORS = Path(__file__).parent / "vectors" / "rfc9474.txt"


def _vectors() -> dict[str, dict[str, str]]:
    """Appendix A as {variant name: {field: hex}}; a value runs on until the next `name =`."""
    vectors: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    field = ""
    for line in VECTORS.read_text().splitlines():
        if line.startswith("#") and not line.startswith("## "):
            continue
        if line.startswith("## "):
            current = vectors.setdefault(line[3:].removesuffix(" Test Vector"), {})
        elif " =" in line:
            field, _, value = line.partition(" =")
            current[field] = value.strip()
        elif line.strip():
            current[field] += line.strip()
    return vectors


VECTOR_SET = _vectors()


def _keys(v: dict[str, str]) -> rsa.RSAPrivateKey:
    p, q, n, e, d = (int(v[name], 16) for name in ("p", "q", "n", "e", "d"))
    assert p * q == n
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    return numbers.private_key()


def test_the_file_holds_all_four_named_variants() -> None:
    assert sorted(VECTOR_SET) == sorted(v.name for v in blind_rsa.VARIANTS)


@pytest.mark.parametrize("variant", blind_rsa.VARIANTS, ids=lambda v: v.name)
def test_every_step_reproduces_the_rfc_vector(variant: blind_rsa.Variant) -> None:
    v = VECTOR_SET[variant.name]
    key = _keys(v)
    msg = bytes.fromhex(v["msg"])
    prefix = bytes.fromhex(v["msg_prefix"]) if v["msg_prefix"] else None
    prepared = blind_rsa.prepare(msg, variant, prefix=prefix)
    assert prepared.hex() == v["prepared_msg"]

    blinded, inv = blind_rsa.blind(
        key.public_key(), prepared, variant, salt=bytes.fromhex(v["salt"]), inv=int(v["inv"], 16)
    )
    assert blinded.hex() == v["blinded_msg"]
    blind_sig = blind_rsa.Signer(key).sign(blinded)
    assert blind_sig.hex() == v["blind_sig"]
    sig = blind_rsa.finalize(key.public_key(), prepared, blind_sig, inv, variant)
    assert sig.hex() == v["sig"]
    # And the signature is an ordinary RSASSA-PSS signature, checked by cryptography itself.
    blind_rsa.verify(key.public_key(), prepared, sig, variant)


def test_the_encoding_matches_the_vector() -> None:
    v = VECTOR_SET[blind_rsa.PSS_RANDOMIZED.name]
    n = int(v["n"], 16)
    encoded = blind_rsa._emsa_pss_encode(
        bytes.fromhex(v["prepared_msg"]), n.bit_length() - 1, bytes.fromhex(v["salt"])
    )
    assert encoded.hex() == v["encoded_msg"]


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("variant", blind_rsa.VARIANTS, ids=lambda v: v.name)
def test_a_fresh_round_trip_verifies(key: rsa.RSAPrivateKey, variant: blind_rsa.Variant) -> None:
    msg = blind_rsa.prepare(b"token input", variant)
    blinded, inv = blind_rsa.blind(key.public_key(), msg, variant)
    sig = blind_rsa.finalize(key.public_key(), msg, blind_rsa.Signer(key).sign(blinded), inv, variant)
    blind_rsa.verify(key.public_key(), msg, sig, variant)


def test_the_signer_sees_unrelated_values_for_the_same_message(key: rsa.RSAPrivateKey) -> None:
    msg = b"the same message twice"
    first, _ = blind_rsa.blind(key.public_key(), msg, blind_rsa.PSS_DETERMINISTIC)
    second, _ = blind_rsa.blind(key.public_key(), msg, blind_rsa.PSS_DETERMINISTIC)
    assert first != second


def test_a_signature_over_another_message_is_refused(key: rsa.RSAPrivateKey) -> None:
    variant = blind_rsa.PSS_DETERMINISTIC
    blinded, inv = blind_rsa.blind(key.public_key(), b"one", variant)
    blind_sig = blind_rsa.Signer(key).sign(blinded)
    with pytest.raises(BlindSignatureError, match="invalid signature"):
        blind_rsa.finalize(key.public_key(), b"another", blind_sig, inv, variant)


def test_a_tampered_blind_signature_is_refused(key: rsa.RSAPrivateKey) -> None:
    variant = blind_rsa.PSS_RANDOMIZED
    msg = blind_rsa.prepare(b"m", variant)
    blinded, inv = blind_rsa.blind(key.public_key(), msg, variant)
    blind_sig = bytearray(blind_rsa.Signer(key).sign(blinded))
    blind_sig[-1] ^= 1
    with pytest.raises(BlindSignatureError, match="invalid signature"):
        blind_rsa.finalize(key.public_key(), msg, bytes(blind_sig), inv, variant)


def test_the_signer_refuses_inputs_of_the_wrong_size_or_range(key: rsa.RSAPrivateKey) -> None:
    k_len = key.key_size // 8
    with pytest.raises(BlindSignatureError, match="unexpected input size"):
        blind_rsa.Signer(key).sign(b"\x01" * (k_len - 1))
    with pytest.raises(BlindSignatureError, match="invalid message"):
        blind_rsa.Signer(key).sign(b"\xff" * k_len)


def test_finalize_refuses_a_short_answer(key: rsa.RSAPrivateKey) -> None:
    variant = blind_rsa.PSS_DETERMINISTIC
    _, inv = blind_rsa.blind(key.public_key(), b"m", variant)
    with pytest.raises(BlindSignatureError, match="unexpected input size"):
        blind_rsa.finalize(key.public_key(), b"m", b"\x00" * 10, inv, variant)


def test_a_blind_that_is_not_invertible_is_refused() -> None:
    v = VECTOR_SET[blind_rsa.PSS_DETERMINISTIC.name]
    public = _keys(v).public_key()
    p = int(v["p"], 16)
    with pytest.raises(BlindSignatureError, match="invalid blind"):
        blind_rsa.blind(public, b"m", blind_rsa.PSS_DETERMINISTIC, inv=p)
