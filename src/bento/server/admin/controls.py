"""What the operator has switched on a box: paused uploads or invocations, evicted functions.

The registry asks these before it admits an upload or an invocation, and when a token
names a function it no longer has; a refusal comes back as (code, message, fix), which
the registry raises as its ``BoxError``:

>>> controls = OperatorControls()
>>> controls.pause({"uploads"})
>>> controls.refusal("uploads")[0]
<ErrorCode.BOX_PAUSED: 'box-paused'>
>>> controls.refusal("invocations") is None
True
>>> controls.evicted("f00d")
>>> controls.eviction_of("f00d")[0]
<ErrorCode.FUNCTION_EVICTED: 'function-evicted'>
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from bento.protocol.errors import ErrorCode

Pausable = Literal["uploads", "invocations"]
PAUSABLE: tuple[Pausable, ...] = ("uploads", "invocations")
Refusal = tuple[ErrorCode, str, str]
REMEMBERED_EVICTIONS = 4096  # evicted ids kept to explain a later request; the oldest is forgotten


class OperatorControls:
    def __init__(self) -> None:
        self.paused: set[Pausable] = set()
        self._evicted: OrderedDict[str, None] = OrderedDict()

    def pause(self, what: set[Pausable]) -> None:
        self.paused |= what

    def resume(self, what: set[Pausable]) -> None:
        self.paused -= what

    def refusal(self, what: Pausable) -> Refusal | None:
        """The refusal of a new upload or invocation while the operator has paused them."""
        if what not in self.paused:
            return None
        return (
            ErrorCode.BOX_PAUSED,
            f"this box's operator has paused new {what}; running sessions go on",
            "try again later, or use another box",
        )

    def evicted(self, function_id: str) -> None:
        self._evicted[function_id] = None
        while len(self._evicted) > REMEMBERED_EVICTIONS:
            self._evicted.popitem(last=False)

    def eviction_of(self, function_id: str) -> Refusal | None:
        """Why a function is gone, if the operator evicted it."""
        if function_id not in self._evicted:
            return None
        return (
            ErrorCode.FUNCTION_EVICTED,
            f"the box's operator evicted function {function_id}: its sessions were stopped, its code "
            "and storage deleted, and its tokens no longer work",
            "deploy it again, on this box or another",
        )
