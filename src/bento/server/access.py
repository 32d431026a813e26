"""Who may reach what on a box: the capabilities that guard its functions and sessions.

A function answers to its invocation token, or to its shutdown token where the request
shuts it down; a session answers to the session right its invocation returned, or, for its
state and a kill only, to its function's shutdown token. A blinded token (``private_token``)
stands for one invocation or one shutdown, and reaches nothing else. A narrowed invocation
token (``server.attenuation``) stands for the invocations its caveats allow, and for listing
the sessions whose rights its holder names; never for a shutdown or for blinded tokens. Plain
tokens are compared as SHA-256 digests; each check fails closed, with a ``BoxError`` that says
what to send instead.
"""

from __future__ import annotations

from typing import Any

from bento.protocol.attenuation import is_narrowable
from bento.protocol.errors import ErrorCode
from bento.protocol.private_token import Right, TokenError, is_blinded
from bento.server import tokens
from bento.server.admin.controls import OperatorControls
from bento.server.blind_issuer import Hold
from bento.server.config import ServerConfig
from bento.server.function import Function
from bento.server.refusal import BoxError
from bento.server.retention import Retention
from bento.server.session import Session
from bento.server.tokens import Payment


class Access:
    """The registry's checks of a token against the function or session it asks for."""

    config: ServerConfig
    boot_id: str
    functions: dict[str, Function]
    sessions: dict[str, Session]
    retention: Retention
    controls: OperatorControls

    def function(
        self,
        function_id: str,
        token: str | None,
        *,
        shutdown: bool = False,
        spend: bool = False,
        narrowed: bool = True,
    ) -> Function:
        """The function, if ``token`` is the right capability for it (invocation or shutdown).

        ``spend``: the request uses the right up (an invocation or a shutdown), so a blinded
        token may stand for it, once; other requests need the plain token. ``narrowed``: a
        narrowed invocation token may stand for the owner's (its caveats are checked where
        the invocation is known: :meth:`payment`); false where only the owner's token will do.
        """
        function = self.functions.get(function_id)
        if function is None:
            if (evicted := self.controls.eviction_of(function_id)) is not None:
                raise BoxError(*evicted)
            raise BoxError(
                ErrorCode.UNKNOWN_FUNCTION,
                f"no function {function_id} on this box",
                "it was shut down, or the box restarted since it was deployed "
                f"(the box's boot id is now {self.boot_id}); deploy it again",
            )
        if token is None:
            raise BoxError(ErrorCode.MISSING_TOKEN, "this request needs a token (Authorization: Bearer ...)")
        which = "shutdown" if shutdown else "invocation"
        if is_blinded(token):
            if not spend:
                raise BoxError(
                    ErrorCode.SINGLE_USE_TOKEN,
                    "a blinded token is spent on one invocation or shutdown, and reaches nothing else",
                    "use the plain token; reach the session it opened with the session right it returned",
                )
            try:  # spent only where the request is carried out, so a refusal costs nothing
                function.issuer.verify(token, "shutdown" if shutdown else "invoke")
            except TokenError as exc:
                raise _token_refused(which, exc) from None
            return function
        expected = function.shutdown_digest if shutdown else function.invocation_digest
        if tokens.matches(token, expected):
            return function
        if not shutdown and is_narrowable(token):
            function.narrowing.verify(token)
            if not narrowed:
                raise BoxError(
                    ErrorCode.WRONG_TOKEN,
                    "a narrowed token cannot do this: it stands only for the invocations its caveats allow",
                    "use the function's own invocation token (its owner's)",
                )
            return function
        raise BoxError(ErrorCode.WRONG_TOKEN, f"that is not the {which} token of function {function_id}")

    def payment(
        self, function: Function, token: str | None, entry: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Payment | None:
        """What pays for one invocation by ``token``: a blinded token's single use, or one use of
        a narrowed token whose every caveat allows this invocation; nothing for the owner's token.
        Synchronous: the check and the count are one step, whatever runs at the same time."""
        if token is None or tokens.matches(token, function.invocation_digest):
            return None
        if is_blinded(token):
            return self.hold(function, token, "invoke")
        if is_narrowable(token):
            return function.narrowing.admit(token, entry, args, kwargs)
        raise BoxError(ErrorCode.WRONG_TOKEN, f"that is not the invocation token of function {function.id}")

    @staticmethod
    def hold(function: Function, token: str, right: Right) -> Hold:
        """Set a blinded token aside for the request it pays for (spent when that is carried out)."""
        try:
            return function.issuer.hold(token, right)
        except TokenError as exc:
            raise _token_refused(right, exc) from None

    def session(self, session_id: str, token: str | None, *, content: bool = True) -> Session:
        """The session, if ``token`` is its session right; or, where ``content`` is false (its
        state, killing it), the function's shutdown token: its owner may stop any session."""
        session = self.sessions.get(session_id)
        if session is None and self.retention.gone(session_id):
            raise BoxError(
                ErrorCode.SESSION_EXPIRED,
                f"session {session_id} ended and was forgotten, to keep the box's memory bounded",
                f"attach within {self.config.session_retention_seconds:.0f} s of a session's end; "
                "the box keeps only the most recent ended sessions",
            )
        if session is None:
            raise BoxError(
                ErrorCode.UNKNOWN_SESSION,
                f"no session {session_id} on this box",
                "it ended long ago, its function was shut down, or the box restarted",
            )
        if token is None:
            raise BoxError(ErrorCode.MISSING_TOKEN, "this request needs a token (Authorization: Bearer ...)")
        if session.right_digest is not None and tokens.matches(token, session.right_digest):
            return session
        function = self.functions.get(session.function_id)
        owner = function is not None and tokens.matches(token, function.shutdown_digest)
        if owner and not content:
            return session
        raise BoxError(
            ErrorCode.WRONG_TOKEN,
            f"that is not the right of session {session_id}",
            "a session belongs to whoever opened it: send the session right its invocation returned"
            + ("" if content else " (the function's shutdown token may also read its state and kill it)"),
        )


def _token_refused(right: str, exc: TokenError) -> BoxError:
    return BoxError(
        ErrorCode.WRONG_TOKEN,
        f"that is not a valid {right} token: {exc}",
        "a blinded token is good for one use: ask the function's owner for another "
        f"(`bento tokens FUNCTION --right {'shutdown' if right == 'shutdown' else 'invoke'}`)",
    )
