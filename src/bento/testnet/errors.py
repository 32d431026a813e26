"""The testnet's one error type, apart so that every module of the package can raise it."""

from __future__ import annotations

from bento.errors import BentoError


class TestnetError(BentoError):
    """The testnet could not be started, found or stopped."""

    __test__ = False  # not a pytest test class, despite its name
