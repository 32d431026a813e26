"""How a relay advertises its box in ContactInfo, and how a client picks a box by name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bento.client.discovery import BoxInfo, resolve
from bento.errors import BentoError
from bento.tor import advert

ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd"
OLD = "a" * 56


@pytest.mark.parametrize("contact", [None, "", "   "])
def test_advertising_on_an_empty_contact(contact: str | None) -> None:
    assert advert.with_onion(contact, ONION) == f"bento={ONION}"
    assert advert.onion_in(advert.with_onion(contact, ONION)) == ONION


def test_advertising_keeps_the_rest_and_replaces_an_old_item() -> None:
    contact = f"Admin <admin@example.org> bento={OLD} ciissversion:2"
    updated = advert.with_onion(contact, ONION)
    assert advert.onion_in(updated) == ONION
    assert OLD not in updated
    assert updated.startswith("Admin <admin@example.org>")
    assert "ciissversion:2" in updated
    assert advert.without(updated) == "Admin <admin@example.org> ciissversion:2"
    assert advert.with_onion(updated, ONION) == updated, "advertising twice changes nothing"


@pytest.mark.parametrize(
    ("contact", "found"),
    [
        (f"bento={ONION}", ONION),
        (f"email x@y bento={ONION}.onion", ONION),
        (f"bento={ONION}\tother", ONION),
        (f"xbento={ONION}", None),  # part of another word
        (f"bento={ONION}x", None),
        (f"bento={ONION.upper()}", None),
        (f"bento={ONION[:-1]}", None),
        ("bento=", None),
        (None, None),
    ],
)
def test_finding_the_advertised_onion(contact: str | None, found: str | None) -> None:
    assert advert.onion_in(contact) == found


_words = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=30).filter(
    lambda w: "bento=" not in w
)


@given(before=_words, after=_words)
def test_advertise_and_withdraw_round_trip(before: str, after: str) -> None:
    contact = f"{before} bento={OLD} {after}"
    updated = advert.with_onion(contact, ONION)
    assert advert.onion_in(updated) == ONION
    # Withdrawing leaves the operator's own text (whitespace normalised).
    assert advert.without(updated) == " ".join(f"{before} {after}".split())
    assert advert.onion_in(advert.without(updated)) is None


# --- picking a box -------------------------------------------------------------------------


def _box(nickname: str, fingerprint: str, onion: str) -> BoxInfo:
    return BoxInfo(nickname, fingerprint, ("Fast", "Running"), onion, "127.0.0.1:5000")


BOXES = [
    _box("alpha", "A" * 40, "a" * 56),
    _box("Beta", "B" * 40, "b" * 56),
    _box("twin", "C" * 40, "c" * 56),
    _box("twin", "D" * 40, "d" * 56),
]


@pytest.mark.parametrize(
    ("name", "nickname"),
    [
        ("alpha", "alpha"),
        ("ALPHA", "alpha"),
        (" beta ", "Beta"),
        ("B" * 40, "Beta"),
        ("$" + "b" * 40, "Beta"),
        ("c" * 56, "twin"),
        ("d" * 56 + ".onion", "twin"),
        ("D" * 40, "twin"),
    ],
)
def test_a_box_is_named_by_nickname_fingerprint_or_onion(name: str, nickname: str) -> None:
    assert resolve(name, BOXES).nickname == nickname


def test_unknown_and_ambiguous_names_are_errors() -> None:
    with pytest.raises(BentoError, match=r"no Bento box called 'gamma'.*alpha, Beta, twin, twin") as unknown:
        resolve("gamma", BOXES)
    assert unknown.value.fix
    with pytest.raises(BentoError, match="names several boxes"):
        resolve("twin", BOXES)
    with pytest.raises(BentoError, match=r"\(boxes: none\)"):
        resolve("alpha", [])
