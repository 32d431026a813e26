"""Browser's padding: to a multiple of a block, and Padmé (PURBs, PETS 2019)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bento.functions.browser.pad import padded_size, padme, to_multiple

MB = 1_000_000


def published(length: int, padding: int) -> int:
    """The authors' Browser: ``final + urandom((len(final) + padding) % padding)`` once over."""
    if padding - length > 0:
        return padding
    return length + (length + padding) % padding


@pytest.mark.parametrize(
    ("length", "block", "padded"),
    [
        (0, MB, 0),  # empty: already a multiple
        (1, MB, MB),
        (MB - 1, MB, MB),
        (MB, MB, MB),  # an exact multiple gains nothing
        (MB + 1, MB, 2 * MB),  # one byte over: a whole block more
        (2 * MB, MB, 2 * MB),
        (7 * MB + 1, 7 * MB, 14 * MB),
        (12345, 0, 12345),  # 0: no padding
        (12345, 1, 12345),
    ],
)
def test_to_multiple_edges(length: int, block: int, padded: int) -> None:
    assert to_multiple(length, block) == padded


def test_the_published_arithmetic_is_what_this_fixes() -> None:
    # 1.2 MB padded "to 1 MB" by the authors' code is 1.4 MB: no multiple, the size shows through.
    assert published(1_200_000, MB) == 1_400_000
    assert to_multiple(1_200_000, MB) == 2 * MB


@given(st.integers(0, 1 << 40), st.integers(1, 1 << 30))
def test_to_multiple_is_the_smallest_multiple_that_holds_the_bytes(length: int, block: int) -> None:
    padded = to_multiple(length, block)
    assert padded % block == 0 and length <= padded < length + block


def reference_padme(length: int) -> int:
    """Algorithm 1 of the PURBs paper, written as printed (floating-point logarithms)."""
    exponent = math.floor(math.log2(length))
    kept = math.floor(math.log2(exponent)) + 1
    mask = (1 << (exponent - kept)) - 1
    return (length + mask) & ~mask


@pytest.mark.parametrize(
    ("length", "padded"),
    [(0, 0), (1, 1), (2, 2), (7, 7), (8, 8), (9, 10), (100, 104), (129, 144), (1000, 1024), (1025, 1088),
     (1 << 20, 1 << 20), ((1 << 20) + 1, (1 << 20) + (1 << 15)), (1_000_000, 1_015_808)],
)  # fmt: skip
def test_padme_hand_computed(length: int, padded: int) -> None:
    assert padme(length) == padded


def test_padme_matches_the_paper_and_stays_under_12_percent() -> None:
    for length in range(2, 1 << 17):
        padded = padme(length)
        assert padded == reference_padme(length)
        assert padded - length <= 0.12 * length


@given(st.integers(2, 1 << 50))
def test_padme_large(length: int) -> None:
    padded = padme(length)
    assert padded == reference_padme(length) and length <= padded <= length * 1.12
    exponent = length.bit_length() - 1
    # Only the top floor(log2 E) + 1 bits of the padded length vary: the rest are zero.
    assert padded % (1 << (exponent - exponent.bit_length())) == 0


def test_padded_size_schemes() -> None:
    assert padded_size(MB + 1, "multiple", MB) == 2 * MB
    assert padded_size(1025, "padme") == 1088
    with pytest.raises(ValueError, match="unknown padding scheme"):
        padded_size(1, "none")
    with pytest.raises(ValueError):
        to_multiple(-1, 4)
