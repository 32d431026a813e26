"""The one error type users see, with the fix attached."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation(exc: ValidationError) -> str:
    """A pydantic validation error as one line: ``field.path: problem; ...``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_input=False)
    )


class BentoError(Exception):
    """An error a user can act on: what went wrong, and (when known) how to fix it."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if self.fix is None else f"{self.message}\n  fix: {self.fix}"
