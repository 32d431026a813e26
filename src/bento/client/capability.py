"""A right to one function, written so that it can be handed to someone else.

``bento:<right>:<onion address>:<function id>:<token>`` names everything its holder needs:
the box (its onion address, which also authenticates it), the function, and the token. With
a blinded token (``bento tokens``) the box cannot tell whom the right was given to, and it
is good once; with a narrowed one (``bento tokens narrow``) it allows only what its caveats say.

    >>> cap = Capability("invoke", "a" * 56, "fn", "pt2." + "x" * 40)
    >>> Capability.parse(cap.encode()) == cap
    True
    >>> cap            # the token never reaches a log or a traceback
    Capability(invoke fn on aaaaaaaaaaaaaaaa...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError
from bento.protocol.attenuation import MAX_WIRE

PREFIX = "bento:"
_SHAPE = re.compile(
    r"^bento:(?P<right>invoke|shutdown):(?P<onion>[a-z2-7]{56}):(?P<function_id>[A-Za-z0-9_-]{1,64})"
    rf":(?P<token>[A-Za-z0-9_.-]{{20,{MAX_WIRE}}})$"  # a narrowed token is longest
)


@dataclass(frozen=True)
class Capability:
    right: str
    onion: str
    function_id: str
    token: str

    def encode(self) -> str:
        return f"{PREFIX}{self.right}:{self.onion}:{self.function_id}:{self.token}"

    @classmethod
    def parse(cls, text: str) -> Capability:
        match = _SHAPE.match(text.strip())
        if match is None:
            raise BentoError(
                "that is not a Bento capability",
                fix="pass it exactly as `bento tokens` printed it: bento:RIGHT:ONION:FUNCTION:TOKEN",
            )
        return cls(**match.groupdict())

    def deployment(self) -> Deployment:
        """A keyring-less deployment record holding just this right."""
        return Deployment(
            function_id=self.function_id,
            name=self.function_id,
            onion=self.onion,
            relay_fingerprint="",
            relay_nickname=self.onion[:16],
            invocation_token=self.token if self.right == "invoke" else "",
            shutdown_token=self.token if self.right == "shutdown" else "",
            boot_id="",
            entry_points=[],
            deployed_at=0.0,
        )

    def __repr__(self) -> str:
        return f"Capability({self.right} {self.function_id} on {self.onion[:16]}...)"


def is_capability(text: str) -> bool:
    return text.startswith(PREFIX)


def resolve(text: str, keyring: Keyring) -> tuple[Deployment, bool]:
    """A function named on the command line: ``(deployment, whether the keyring holds it)``.

    ``text`` is a keyring function's id or name, or a capability someone handed over.
    """
    if is_capability(text):
        return Capability.parse(text).deployment(), False
    return keyring.function(text), True
