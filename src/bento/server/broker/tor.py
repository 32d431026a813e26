"""The Tor operations: circuits, streams over them, the consensus, onion services.

The box's client-only tor for functions (bento.server.tor_for_functions) does the work
and checks each request's fields itself; the table only names the operations, so that an
unknown one is refused like any other and a malformed one is bounded like any other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from bento.errors import BentoError
from bento.server.broker.gate import Denied
from bento.server.broker.operations import Context, Granted, Request
from bento.server.tor_books import TorDenied


class TorRequest(Request):
    model_config = ConfigDict(extra="allow", frozen=True)  # fields checked by InstanceTor.handle

    op: Literal[
        "tor.boxes",
        "tor.relays",
        "tor.exit_allows",
        "tor.circuit",
        "tor.circuits",
        "tor.wait",
        "tor.close",
        "tor.events",
        "tor.stream",
        "tor.publish",
        "tor.unpublish",
    ]


async def tor(context: Context, request: Any) -> Granted:
    if context.tor is None:
        raise Denied("this box offers no Tor for functions, or the manifest asks for none")
    try:
        reply, sock = await context.tor.handle(request.op, request.model_dump(exclude={"op"}))
    except (TorDenied, PermissionError) as exc:
        raise Denied(str(exc)) from None
    except BentoError as exc:
        raise OSError(exc.message) from None
    return Granted(reply, sock)
