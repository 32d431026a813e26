"""What a box's answers mean to the client: each one it cannot use, as the error it raises.

A box that cannot be reached is a :class:`TransportError`; one that refuses a request, a
:class:`Refused` with the box's code and fix where it sent them; one that answers with
something not of the protocol, a :class:`ProtocolError`. ``name`` is the box's, as
``Box.name`` gives it, for the message.
"""

from __future__ import annotations

import contextlib
import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from bento.errors import BentoError, ProtocolError, Refused, TransportError
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import Invoked

Model = TypeVar("Model", bound=BaseModel)


def parsed(name: str, model: type[Model], content: bytes) -> Model:
    """A successful answer's body, as ``model``."""
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        raise ProtocolError(f"the box {name} sent a malformed {model.__name__}: {exc}") from None


def invoked(name: str, text: str) -> Invoked:
    """The first message of a session's WebSocket: the invocation's answer, or its refusal."""
    try:
        event = json.loads(text)
    except ValueError:
        event = None
    if isinstance(event, dict) and event.get("type") == "invoked":
        with contextlib.suppress(ValidationError):  # else: malformed, refused below
            return Invoked.model_validate(event)
    if isinstance(event, dict) and "error" in event:
        raise refusal(name, ErrorCode.status_of(event.get("code")), text.encode())
    raise ProtocolError(f"the box {name} answered the invocation with {text[:200]!r}")


def unreachable(name: str, exc: BaseException) -> TransportError:
    return TransportError(
        f"cannot reach the box {name} over Tor: {type(exc).__name__}: {exc!s:.200}",
        fix="check that the Tor client is running (BENTO_SOCKS) and that the box is up",
    )


def refusal(name: str, status: int, content: bytes) -> BentoError:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return Refused.from_body(status, body, where=f"the box {name}")
    return Refused(f"the box {name} answered HTTP {status}", code=ErrorCode.HTTP_ERROR, status=status)
