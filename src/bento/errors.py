"""The errors users and programs see: one root, ``BentoError``, with the fix attached.

    BentoError                  anything Bento cannot do, with what to do about it
    ├── TransportError          the box could not be reached (Tor, the network)
    │   └── ConnectionLost      a session's connection dropped and stayed down
    ├── ProtocolError           the box sent something malformed or inconsistent
    ├── UnreadableToken         not a token that can be narrowed (plain, blinded, altered)
    ├── NarrowingRefused        a readable token, but caveats that cannot be written
    └── Refused                 the box refused the request: ``code`` and ``status`` kept
        ├── Unauthorized        401, 403: a missing or wrong token, or beyond the policy
        ├── NotFound            404: no such function, session, entry point
        ├── TooLarge            413
        ├── Invalid             422: a malformed request, or unusable code
        └── Busy                503: retry later

>>> error = Refused.from_body(404, {"error": "no function f1", "code": "unknown-function"})
>>> type(error).__name__, error.code, error.status
('NotFound', <ErrorCode.UNKNOWN_FUNCTION: 'unknown-function'>, 404)
>>> isinstance(error, BentoError)
True
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import ValidationError

from bento.protocol.errors import ErrorCode, ExitStatus


def describe_validation(exc: ValidationError) -> str:
    """A pydantic validation error as one line: ``field.path: problem; ...``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_input=False)
    )


@contextlib.contextmanager
def teardown(step: str, *expected: type[Exception], log: logging.Logger | None = None) -> Iterator[None]:
    """Finish a teardown step whatever it meets, and hide no bug doing it.

    ``expected`` (what a closed peer or a dead process raises) ends the step quietly;
    anything else ends it too, so that the rest of the teardown runs, but is logged at
    debug by its type and the line that raised it: not its message, which may quote a
    token. Cancellation is no Exception: it always goes through.

    >>> with teardown("closing a connection", OSError):
    ...     raise ConnectionResetError("the peer went")
    >>> with teardown("closing a connection", OSError):
    ...     raise KeyError("a bug")  # logged: closing a connection failed unexpectedly: KeyError at ...
    """
    try:
        yield
    except expected:
        pass
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        (log or logging.getLogger("bento")).debug(
            "%s failed unexpectedly: %s at %s:%s", step, type(exc).__name__, where.filename, where.lineno
        )


class BentoError(Exception):
    """An error a user can act on: what went wrong, and (when known) how to fix it."""

    exit_status: ClassVar[ExitStatus] = ExitStatus.ERROR

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if self.fix is None else f"{self.message}\n  fix: {self.fix}"


class TransportError(BentoError):
    """The box could not be reached, or the connection to it broke."""


class ConnectionLost(TransportError):
    """A session's connection dropped, and re-attaching failed for longer than the client waits."""


class ProtocolError(BentoError):
    """The box answered something that is not the Bento protocol, or contradicts itself."""


class UnreadableToken(BentoError):
    """A token this library cannot read to narrow it: a plain or blinded one, or one altered."""


class NarrowingRefused(BentoError):
    """A narrowing that cannot be written: no caveat, a bad one, or a token narrowed to the limit."""


class Refused(BentoError):
    """The box refused: ``code`` (an :class:`ErrorCode`, or the raw string of a newer box's
    code) is for programs, ``status`` is the HTTP status it came with."""

    def __init__(self, message: str, *, code: ErrorCode | str, status: int, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.code = code
        self.status = status

    @property
    def retry(self) -> bool:
        """The same request may succeed later (the box or the function is busy)."""
        return isinstance(self.code, ErrorCode) and self.code.retry

    @staticmethod
    def from_body(status: int, body: dict[str, Any], *, where: str = "the box") -> Refused:
        """The exception for an ``ErrorBody`` (already parsed as JSON) that came with ``status``."""
        raw = str(body.get("code", ErrorCode.HTTP_ERROR))
        code: ErrorCode | str = ErrorCode(raw) if raw in _CODES else raw
        fix = body.get("fix")
        kind = _BY_STATUS.get(status, Refused)
        return kind(
            f"{where} refused: {body.get('error', f'HTTP {status}')}",
            code=code,
            status=status,
            fix=fix if isinstance(fix, str) else None,
        )


class Unauthorized(Refused):
    """401 or 403: no token, the wrong token, or a request the box's policy forbids."""


class NotFound(Refused):
    """404: no such function, session, entry point or endpoint."""


class TooLarge(Refused):
    """413: the request or the code is larger than the box accepts."""


class Invalid(Refused):
    """422: a malformed request, or code the box cannot use."""


class Busy(Refused):
    """503: the box or the function is at its limit; retry later."""


_CODES = frozenset(code.value for code in ErrorCode)
_BY_STATUS: dict[int, type[Refused]] = {
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    413: TooLarge,
    422: Invalid,
    503: Busy,
}
