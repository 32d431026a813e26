"""Capability tokens, and v3 onion addresses with the Ed25519 key behind them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bento.errors import BentoError
from bento.protocol import onion
from bento.server import tokens

# --- tokens -------------------------------------------------------------------------------


def _unpadded_b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_tokens_carry_256_bits_and_ids_128() -> None:
    token, function_id = tokens.new_token(), tokens.new_id()
    assert len(_unpadded_b64(token)) == 32
    assert len(bytes.fromhex(function_id)) == 16
    assert token.isascii() and "=" not in token, "a token fits in a header and a URL as it is"
    assert len({tokens.new_token() for _ in range(1000)}) == 1000


def test_only_the_exact_token_matches_its_digest() -> None:
    token = tokens.new_token()
    expected = tokens.digest(token)
    assert expected == hashlib.sha256(token.encode()).digest()
    assert tokens.matches(token, expected)
    for wrong in (None, "", token[:-1], token + "A", token.upper(), tokens.new_token(), f" {token}"):
        assert not tokens.matches(wrong, expected), wrong


def test_matching_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = tokens.new_token()
    assert tokens.matches(token, tokens.digest(token))
    assert not tokens.matches("guess", tokens.digest(token))
    # Both sides are fixed-length digests, so even the length of the guess does not leak.
    assert [(len(a), len(b)) for a, b in calls] == [(32, 32), (32, 32)]


# --- onion addresses -----------------------------------------------------------------------

SPEC_EXAMPLE = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd"  # rend-spec-v3


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_addresses_round_trip_through_their_key() -> None:
    key = Ed25519PrivateKey.generate()
    address = onion.address_of(key)
    assert len(address) == 56 and address == address.lower() and address.endswith("d")
    assert set(address) <= set("abcdefghijklmnopqrstuvwxyz234567")
    recovered = onion.public_key_of(address).public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert recovered == _public_bytes(key)
    for spelled in (address, address + ".onion", address.upper(), address.upper() + ".ONION"):
        assert onion.is_onion_address(spelled), spelled


def test_the_spec_example_is_valid() -> None:
    assert onion.is_onion_address(SPEC_EXAMPLE)
    assert onion.onion_address(onion.public_key_of(SPEC_EXAMPLE).public_bytes_raw()) == SPEC_EXAMPLE


def test_any_changed_character_is_rejected() -> None:
    address = onion.address_of(Ed25519PrivateKey.generate())
    for position, char in enumerate(address):
        replacement = "a" if char != "a" else "b"
        mangled = address[:position] + replacement + address[position + 1 :]
        with pytest.raises(BentoError, match="not a valid v3 onion address"):
            onion.public_key_of(mangled)


@pytest.mark.parametrize(
    "text",
    ["", "example.com", SPEC_EXAMPLE[:-1], SPEC_EXAMPLE + "a", "1" * 56, "é" * 56, "expyuzz4wqqyqhjn"],
)
def test_things_that_are_not_addresses(text: str) -> None:
    assert not onion.is_onion_address(text)
    with pytest.raises(BentoError):
        onion.public_key_of(text)


def test_a_wrong_version_byte_is_rejected() -> None:
    public = _public_bytes(Ed25519PrivateKey.generate())
    checksum = hashlib.sha3_256(b".onion checksum" + public + b"\x02").digest()[:2]
    v2_style = base64.b32encode(public + checksum + b"\x02").decode().lower()
    assert not onion.is_onion_address(v2_style)


def test_verify_accepts_the_key_holder_only() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    address = onion.address_of(key)
    onion.verify(address, key.sign(b"message"), b"message")
    for signature, message in [
        (key.sign(b"message"), b"messagE"),
        (other.sign(b"message"), b"message"),
        (b"", b"message"),
        (b"\0" * 64, b"message"),
    ]:
        with pytest.raises(BentoError, match="does not match") as refused:
            onion.verify(address, signature, message)
        assert refused.value.fix


# --- the key tor is given ------------------------------------------------------------------

# Just enough Ed25519 (RFC 8032) to compute scalar * B, to check what tor will derive.
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_BY = 4 * pow(5, -1, _P) % _P
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_Point = tuple[int, int, int, int]


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _scalar_base(scalar: int) -> bytes:
    result: _Point = (0, 1, 1, 0)
    base: _Point = (_BX, _BY, 1, _BX * _BY % _P)
    while scalar:
        if scalar & 1:
            result = _add(result, base)
        base = _add(base, base)
        scalar >>= 1
    z = pow(result[2], -1, _P)
    x, y = result[0] * z % _P, result[1] * z % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def test_the_key_blob_for_tor_is_the_expanded_key_of_the_same_address() -> None:
    seed = bytes(range(32))
    blob = onion.tor_key_blob(seed)
    kind, _, encoded = blob.partition(":")
    assert kind == "ED25519-V3"
    expanded = base64.b64decode(encoded, validate=True)
    assert len(expanded) == 64
    scalar = int.from_bytes(expanded[:32], "little")
    assert scalar % 8 == 0 and scalar >> 254 == 1, "clamped as Ed25519 requires"
    assert expanded[32:] == hashlib.sha512(seed).digest()[32:]
    key = Ed25519PrivateKey.from_private_bytes(seed)
    assert _scalar_base(scalar) == _public_bytes(key), "tor publishes the onion address of our key"
    assert onion.onion_address(_scalar_base(scalar)) == onion.address_of(key)


def test_ids_never_read_as_command_line_options() -> None:
    # `bento logs <session>` once failed because an id began with "-"; ids are hex now.
    ids = [tokens.new_id() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
