"""Every error code the box sends and every exit status of ``bento``, in one table.

The server refuses with an ``ErrorCode`` (its HTTP status comes from here), the OpenAPI
document lists the statuses of each code, and the client raises the exception class that
matches the status, keeping the code. Programs match on codes, never on messages:

>>> ErrorCode("unknown-function").status
404
>>> ErrorCode.BOX_FULL.retry
True
>>> ExitStatus.for_session("killed")
<ExitStatus.KILLED: 2>

Standard library only: the table is shared by everything down to the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


@dataclass(frozen=True)
class Meaning:
    status: int  # the HTTP status that carries the code
    text: str  # for the docs: when the box answers this
    retry: bool = False  # the same request may succeed later, unchanged


class ErrorCode(StrEnum):
    MISSING_TOKEN = "missing-token"  # noqa: S105 (a code, not a secret)
    WRONG_TOKEN = "wrong-token"  # noqa: S105
    SINGLE_USE_TOKEN = "single-use-token"  # noqa: S105
    CAVEAT_REFUSED = "caveat-refused"
    EXCEEDS_POLICY = "exceeds-policy"
    UNKNOWN_FUNCTION = "unknown-function"
    UNKNOWN_SESSION = "unknown-session"
    UNKNOWN_ENTRY = "unknown-entry"
    NO_SUCH_ENDPOINT = "no-such-endpoint"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    BODY_TOO_LARGE = "body-too-large"
    UPLOAD_TOO_LARGE = "upload-too-large"
    STORAGE_TOO_SMALL = "storage-too-small"
    INVALID_REQUEST = "invalid-request"
    BAD_CODE = "bad-code"
    BAD_BLINDED_TOKEN = "bad-blinded-token"  # noqa: S105
    SESSION_EXPIRED = "session-expired"
    OUTPUT_EXPIRED = "output-expired"
    FUNCTION_BUSY = "function-busy"
    BOX_FULL = "box-full"
    BOX_STOPPING = "box-stopping"
    BOX_PAUSED = "box-paused"
    FUNCTION_EVICTED = "function-evicted"
    COVER_REFUSED = "cover-refused"
    COVER_FULL = "cover-full"
    HTTP_ERROR = "http-error"

    @property
    def meaning(self) -> Meaning:
        return TABLE[self]

    @property
    def status(self) -> int:
        return TABLE[self].status

    @property
    def retry(self) -> bool:
        return TABLE[self].retry

    @classmethod
    def status_of(cls, code: object) -> int:
        """The HTTP status of a code as it arrived (400 for one this version does not know)."""
        return cls(str(code)).status if code in cls._value2member_map_ else 400


TABLE: dict[ErrorCode, Meaning] = {
    ErrorCode.MISSING_TOKEN: Meaning(401, "The request needs a token and has none."),
    ErrorCode.WRONG_TOKEN: Meaning(403, "The token is not this function's token of the right kind."),
    ErrorCode.SINGLE_USE_TOKEN: Meaning(403, "A blinded token is spent, or used beyond its session."),
    ErrorCode.CAVEAT_REFUSED: Meaning(403, "A narrowed token's caveats do not allow this invocation."),
    ErrorCode.EXCEEDS_POLICY: Meaning(403, "The manifest asks for more than the box's policy allows."),
    ErrorCode.UNKNOWN_FUNCTION: Meaning(404, "No such function: shut down, or the box restarted."),
    ErrorCode.UNKNOWN_SESSION: Meaning(404, "No such session: ended long ago, or the box restarted."),
    ErrorCode.UNKNOWN_ENTRY: Meaning(404, "The module has no such entry point."),
    ErrorCode.NO_SUCH_ENDPOINT: Meaning(404, "No route at this path."),
    ErrorCode.METHOD_NOT_ALLOWED: Meaning(405, "The path exists, the method does not."),
    ErrorCode.BODY_TOO_LARGE: Meaning(413, "The request body is larger than the box reads."),
    ErrorCode.UPLOAD_TOO_LARGE: Meaning(413, "The code is larger than the policy's max_upload_bytes."),
    ErrorCode.STORAGE_TOO_SMALL: Meaning(
        409, "A replacing function's storage_mb is smaller than the storage it would take over."
    ),
    ErrorCode.INVALID_REQUEST: Meaning(422, "The body does not match the request model."),
    ErrorCode.BAD_CODE: Meaning(422, "The code cannot be used (encoding, syntax, archive, module)."),
    ErrorCode.BAD_BLINDED_TOKEN: Meaning(422, "A blinded token request the issuer cannot sign."),
    ErrorCode.SESSION_EXPIRED: Meaning(
        410, "The session ended and was forgotten, to bound the box's memory."
    ),
    ErrorCode.OUTPUT_EXPIRED: Meaning(
        410, "The ended session's output was dropped, to bound the box's memory."
    ),
    ErrorCode.FUNCTION_BUSY: Meaning(503, "The function runs as many instances as it asked for.", True),
    ErrorCode.BOX_FULL: Meaning(503, "The box is at its instance or memory limit.", True),
    ErrorCode.BOX_STOPPING: Meaning(503, "The box is stopping; its sessions are being stopped."),
    ErrorCode.BOX_PAUSED: Meaning(503, "The box's operator paused new uploads or invocations.", True),
    ErrorCode.FUNCTION_EVICTED: Meaning(410, "The box's operator evicted the function: its code is gone."),
    ErrorCode.COVER_REFUSED: Meaning(
        403, "The box does not cover a stream so (its policy.cover), or the cover broke."
    ),
    ErrorCode.COVER_FULL: Meaning(503, "The box covers as many cells per second as its policy allows.", True),
    ErrorCode.HTTP_ERROR: Meaning(400, "Any other refusal by the HTTP layer."),
}


def statuses(*codes: ErrorCode) -> list[int]:
    """The HTTP statuses these codes travel with, sorted, once each (for the OpenAPI document)."""
    return sorted({code.status for code in codes})


class ExitStatus(IntEnum):
    """How ``bento`` exits. With ``--json``, the document on stdout says more."""

    OK = 0  # the command did what it was asked; a session completed
    ERROR = 1  # the session's function raised, or Bento refused or failed (the box, Tor, the keyring)
    KILLED = 2  # the session was killed (a limit, a policy, a shutdown)
    INTERRUPTED = 130  # Ctrl-C: a session, if any, goes on at the box

    @classmethod
    def for_session(cls, state: str) -> ExitStatus:
        return {"completed": cls.OK, "error": cls.ERROR}.get(state, cls.KILLED)
