"""How a relay says it runs Bento: a ``bento=<onion address>`` item in its ContactInfo.

ContactInfo is free text that the relay publishes in its signed descriptor, and every
Tor client can fetch it from the directory: no change to Tor, no central registry.
"""

from __future__ import annotations

import re

_ITEM = re.compile(r"(?:^|\s)bento=([a-z2-7]{56})(?:\.onion)?(?=\s|$)")


def onion_in(contact: str | None) -> str | None:
    """The Bento onion address advertised in ``contact``, if any."""
    match = _ITEM.search(contact or "")
    return match.group(1) if match else None


def without(contact: str | None) -> str:
    """``contact`` with any Bento item removed."""
    return " ".join(_ITEM.sub(" ", contact or "").split())


def with_onion(contact: str | None, onion: str) -> str:
    """``contact`` advertising ``onion`` (replacing an older Bento item)."""
    rest = without(contact)
    return f"{rest} bento={onion}".strip()
