"""Broker operations: one typed request model and one handler per operation, in one table.

Adding an operation (a tor circuit, a call to another box, storage) takes three things:

- a request model: a :class:`Request` whose ``op`` field is a ``Literal`` naming it;
- an async handler ``(Context, request) -> Granted`` that raises :class:`Denied` for
  what the manifest or the node policy does not allow (and OSError for what failed);
- one line in :data:`bento.server.broker.table.OPERATIONS`.

The broker parses each request against the table's union of models (bounded in size
by the socket, in depth by pydantic's JSON parser), so a handler only ever sees a valid
request, and everything a handler raises becomes a reply: nothing a function sends can
end its broker, let alone its session.
"""

from __future__ import annotations

import functools
import operator
import socket
import typing
from collections.abc import Awaitable, Callable
from dataclasses import InitVar, dataclass, field
from typing import Annotated, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bento.errors import describe_validation
from bento.protocol.policy import Needs, NodePolicy
from bento.server.broker.budgets import BudgetSpec, Ledger
from bento.server.broker.gate import Denied, Gatekeeper

Resolver = Callable[[str], Awaitable[list[str]]]  # a host name -> its addresses, as text


class Request(BaseModel):
    """One request from a function; subclasses add ``op: Literal["name"]`` and their fields.

    Strict: no unknown fields, no coercion (``"80"`` is not a port, ``1`` not ``true``),
    finite numbers only; every string and list a subclass declares is bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TorService(Protocol):
    """An instance's Tor for functions, as the broker's core needs it (bento.server.broker.tor)."""

    circuits_built: int
    onions_published: int

    def listening(self, sock: socket.socket) -> None: ...

    async def close(self) -> None: ...


class StorageService(Protocol):
    """An instance's storage channel, as the broker's core needs it (bento.server.store)."""

    async def aclose(self) -> None: ...


class Malformed(Exception):
    """The request is not one the broker understands: wrong JSON, unknown op, bad fields."""


@dataclass
class Granted:
    """A handler's answer: JSON fields for the reply, and the socket it passes, if any."""

    fields: dict[str, Any] = field(default_factory=dict)
    sock: socket.socket | None = None


@dataclass
class Context:
    """What a handler knows about the instance it serves, and what it counts."""

    needs: Needs
    policy: NodePolicy
    gate: Gatekeeper
    resolver: Resolver
    function_id: str = ""
    session_id: str = ""
    storage: StorageService | None = None  # None: the manifest asks for no storage
    tor: TorService | None = None  # Tor for functions, when the box offers it and the manifest asks
    # Told the reason of each refusal (see Broker): the operator's count, by function.
    on_refusal: Callable[[str], None] = field(default=lambda reason: None, repr=False)
    granted: int = 0
    denied: int = 0
    closed: bool = False
    budgets: InitVar[Ledger | None] = None  # the function's ledger, shared by its instances
    ledger: Ledger = field(init=False)

    def __post_init__(self, budgets: Ledger | None) -> None:
        self.ledger = budgets if budgets is not None else Ledger(BudgetSpec.of(self.needs, self.policy))

    async def aclose(self) -> None:
        """Release what the operations hold for this instance (it has gone); once."""
        if self.closed:
            return
        self.closed = True
        if self.storage is not None:
            await self.storage.aclose()
        if self.tor is not None:
            await self.tor.close()

    def require_network(self) -> None:
        if not (self.needs.network and self.policy.network.allowed):
            raise Denied("network access is not in this function's manifest (needs.network)")


R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class Operation(Generic[R]):
    request: type[R]
    handler: Callable[[Context, R], Awaitable[Granted]]

    @property
    def names(self) -> tuple[str, ...]:
        """The ``op`` values it serves: usually one; a family of operations may share a model."""
        return tuple(str(name) for name in typing.get_args(self.request.model_fields["op"].annotation))


class Table:
    """The operations a broker serves, and the one parser for all their requests."""

    def __init__(self, *operations: Operation[Any]) -> None:
        self.operations = {name: op for op in operations for name in op.names}
        if len(self.operations) != sum(len(op.names) for op in operations):
            raise ValueError("two broker operations share a name")
        union = functools.reduce(operator.or_, [op.request for op in operations])
        tagged: Any = Annotated[union, Field(discriminator="op")]
        self._parser: TypeAdapter[Request] = TypeAdapter(tagged)

    def parse(self, raw: bytes) -> tuple[Operation[Any], Request]:
        try:
            request = self._parser.validate_json(raw)
        except ValidationError as exc:
            raise Malformed(self._describe(exc)) from None
        return self.operations[typing.cast(Any, request).op], request

    def _describe(self, exc: ValidationError) -> str:
        known = ", ".join(sorted(self.operations))
        for error in exc.errors(include_input=False):
            if error["type"] == "union_tag_invalid":
                return f"unknown broker operation {error['ctx']['tag']} (this box knows: {known})"
            if error["type"] == "union_tag_not_found":
                return f"a broker request is a JSON object with an 'op' (one of: {known})"
            if error["type"] in ("dict_type", "model_type") and not error["loc"]:
                return "a broker request is a JSON object"
        return describe_validation(exc)

    async def dispatch(self, context: Context, raw: bytes) -> Granted:
        operation, request = self.parse(raw)
        return await operation.handler(context, request)
