"""The Tor requests a function may send (``api.tor``), one strict model each.

Every field is bounded here, before any handler runs: a timeout is a finite number of
seconds (``NaN < 0`` is false, so a range check alone would let one into
``asyncio.timeout`` and break the event loop's timer order for every session), ports
are ports, fingerprints are 40 hex digits (with an optional ``$``), lists are short.

>>> Wait.model_validate_json('{"op": "tor.wait", "circuit": "7", "timeout": 0.5}').timeout
0.5
>>> Wait.model_validate_json('{"op": "tor.wait", "circuit": "7", "timeout": NaN}')
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Wait
timeout
  Input should be a finite number [type=finite_number, input_value=nan, input_type=float]
    For further information visit https://errors.pydantic.dev/.../v/finite_number
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from bento.server.broker.operations import Request
from bento.tor.consensus import MAX_PATH

MAX_WAIT = 120.0  # seconds any one request may wait inside the broker

Port = Annotated[int, Field(ge=1, le=65535)]
# A host name or address literal as Tor's SOCKS port takes it: no spaces, quotes or controls.
Host = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r'^[^\x00-\x20\x7f"]+$')]
# A relay as the function names it: bounded here, judged by the consensus (which says
# "not a relay fingerprint" for a nickname, and "no relay" for an unknown one).
Fingerprint = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x20\x7f]+$")]
CircuitId = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=r"^[0-9]+$")]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Flag = Annotated[str, StringConstraints(min_length=1, max_length=31, pattern=r"^[A-Za-z]+$")]
Target = tuple[Host, Port]


class Boxes(Request):
    op: Literal["tor.boxes"]


class Relays(Request):
    op: Literal["tor.relays"]
    flags: list[Flag] = Field(default_factory=list, max_length=16)
    exit_to: Target | None = None
    offset: int = Field(default=0, ge=0, le=1 << 20)


class ExitAllows(Request):
    op: Literal["tor.exit_allows"]
    fingerprint: Fingerprint
    host: Host
    port: Port


class BuildCircuit(Request):
    op: Literal["tor.circuit"]
    path: list[Fingerprint] | None = Field(default=None, max_length=4 * MAX_PATH)
    length: int = Field(default=3, ge=1, le=64, description=f"hops: the consensus allows 1 to {MAX_PATH}")
    exit_to: Target | None = None
    exclude: list[Fingerprint] = Field(default_factory=list, max_length=64)


class Circuits(Request):
    op: Literal["tor.circuits"]


class Wait(Request):
    op: Literal["tor.wait"]
    circuit: CircuitId
    timeout: Seconds | None = Field(default=None, description=f"at most {MAX_WAIT:.0f} s; none: that")


class Close(Request):
    op: Literal["tor.close"]
    circuit: CircuitId


class Events(Request):
    op: Literal["tor.events"]
    timeout: Seconds | None = None


class Stream(Request):
    op: Literal["tor.stream"]
    host: Host
    port: Port
    circuit: CircuitId | None = Field(default=None, description="none: an onion address, tor's circuit")
    timeout: Seconds | None = Field(
        default=None, description="seconds to connect in; none: the broker's most"
    )


class Publish(Request):
    op: Literal["tor.publish"]
    port: Port
    virtual_port: Port = 80
    key: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="base64 of a 32-byte Ed25519 seed"
    )
    client_auth: Annotated[str, StringConstraints(pattern=r"^[A-Za-z2-7]{52}$")] | None = Field(
        default=None, description="a base32 X25519 public key"
    )
    wait: bool = True


class Unpublish(Request):
    op: Literal["tor.unpublish"]
    address: Annotated[str, StringConstraints(min_length=1, max_length=70)]


def bounded(timeout: float | None) -> float:
    """A request's wait in seconds, at most :data:`MAX_WAIT`."""
    return MAX_WAIT if timeout is None else min(timeout, MAX_WAIT)
