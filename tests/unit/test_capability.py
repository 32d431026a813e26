"""Capabilities: a right written down for someone else, parsed strictly."""

from __future__ import annotations

import pytest

from bento.client.capability import Capability, is_capability
from bento.errors import BentoError

ONION = "b" * 56


def test_a_capability_round_trips_and_becomes_a_deployment() -> None:
    cap = Capability("invoke", ONION, "fn-id_1", "pt2." + "A" * 40)
    parsed = Capability.parse(cap.encode())
    assert parsed == cap and is_capability(cap.encode())
    deployment = parsed.deployment()
    assert (deployment.onion, deployment.function_id) == (ONION, "fn-id_1")
    assert deployment.invocation_token == cap.token and deployment.shutdown_token == ""


def test_a_shutdown_capability_carries_only_the_shutdown_right() -> None:
    deployment = Capability("shutdown", ONION, "fn", "t" * 43).deployment()
    assert deployment.shutdown_token == "t" * 43 and deployment.invocation_token == ""


@pytest.mark.parametrize(
    "text",
    [
        "bento:invoke:" + ONION + ":fn",  # no token
        "bento:admin:" + ONION + ":fn:" + "t" * 43,  # no such right
        "bento:invoke:" + "B" * 56 + ":fn:" + "t" * 43,  # not base32
        "bento:invoke:" + ONION + ":fn:" + "t" * 43 + ":extra",
        "bento:invoke:" + ONION + ":f n:" + "t" * 43,
        "bento:invoke:" + ONION + ":fn:" + "t" * 5000,  # longer than any narrowed token
    ],
)
def test_anything_else_is_refused_with_the_expected_shape(text: str) -> None:
    with pytest.raises(BentoError, match="not a Bento capability"):
        Capability.parse(text)


def test_the_token_stays_out_of_its_repr() -> None:
    cap = Capability("invoke", ONION, "fn", "secret-token-value-000000")
    assert "secret" not in repr(cap)
