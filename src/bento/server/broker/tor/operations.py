"""The Tor operations of the broker's table: one typed request and one handler each.

The instance's :class:`~bento.server.broker.tor.instance.InstanceTor` does the work;
a handler only finds it (Denied when the box offers no Tor for functions, or the
manifest asks for none) and turns Tor's failures into the broker's replies.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bento.errors import BentoError
from bento.server.broker.gate import Denied
from bento.server.broker.operations import Context, Granted, Operation, Request
from bento.server.broker.tor import requests as rq
from bento.server.broker.tor.books import TorDenied
from bento.server.broker.tor.instance import InstanceTor

R = TypeVar("R", bound=Request)
Answer = dict[str, Any] | tuple[dict[str, Any], socket.socket]


def _handler(
    method: Callable[[InstanceTor, R], Awaitable[Answer]],
) -> Callable[[Context, R], Awaitable[Granted]]:
    """A table handler that asks the instance's Tor, and says what Tor refused or failed."""

    @functools.wraps(method)
    async def handle(context: Context, request: R) -> Granted:
        tor = context.tor
        if not isinstance(tor, InstanceTor):
            raise Denied("this box offers no Tor for functions, or the manifest asks for none")
        try:
            answer = await method(tor, request)
        except (TorDenied, PermissionError) as exc:
            raise Denied(str(exc)) from None
        except BentoError as exc:
            raise OSError(exc.message) from None
        return Granted(*answer) if isinstance(answer, tuple) else Granted(answer)

    return handle


OPERATIONS: tuple[Operation[Any], ...] = (
    Operation(rq.Boxes, _handler(InstanceTor.boxes)),
    Operation(rq.Relays, _handler(InstanceTor.relays)),
    Operation(rq.ExitAllows, _handler(InstanceTor.exit_allows)),
    Operation(rq.BuildCircuit, _handler(InstanceTor.circuit)),
    Operation(rq.Circuits, _handler(InstanceTor.circuits)),
    Operation(rq.Wait, _handler(InstanceTor.wait)),
    Operation(rq.Close, _handler(InstanceTor.close_circuit)),
    Operation(rq.Events, _handler(InstanceTor.events)),
    Operation(rq.Stream, _handler(InstanceTor.stream)),
    Operation(rq.Publish, _handler(InstanceTor.publish)),
    Operation(rq.Unpublish, _handler(InstanceTor.unpublish)),
)
