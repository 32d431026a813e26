"""The box's refusal: a request it will not carry out, with a code for programs and a fix for people.

The API answers one with the code's HTTP status, and the code, message and fix in its body;
the client reads it back as a ``bento.errors.Refused``.

>>> refused = BoxError(ErrorCode.MISSING_TOKEN, "this request needs a token")
>>> refused.status
401
"""

from __future__ import annotations

from bento.protocol.errors import ErrorCode


class BoxError(Exception):
    """A request the box refuses: ``code`` is stable for programs, the message is for people."""

    def __init__(self, code: ErrorCode, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.fix = code, message, fix

    @property
    def status(self) -> int:
        return self.code.status
