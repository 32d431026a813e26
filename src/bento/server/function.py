"""A function as the box holds it: its manifest, its installed code, its tokens' digests
and its sessions; and what a deployment hands back once (the tokens in the clear)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bento.protocol.manifest import Manifest
from bento.protocol.messages import Replaced
from bento.server.attenuation import Narrowing
from bento.server.blind_issuer import BlindIssuer
from bento.server.broker.budgets import Ledger
from bento.server.session import Session


@dataclass
class Function:
    id: str
    manifest: Manifest
    code_dir: Path
    entry_points: list[str]
    invocation_digest: bytes
    shutdown_digest: bytes
    narrowing: Narrowing  # its root key: verifies the invocation tokens narrowed from its own
    created_at: float = field(default_factory=time.time)
    sessions: dict[str, Session] = field(default_factory=dict)
    issuer: BlindIssuer = field(init=False)
    ledger: Ledger | None = None  # its budgets' use, shared by its instances (made at the first)

    def __post_init__(self) -> None:
        self.issuer = BlindIssuer(self.id)


@dataclass(frozen=True)
class Deployed:
    """A new function and its tokens, which the box returns once and keeps only as digests."""

    function: Function
    invocation_token: str
    shutdown_token: str
    replaced: Replaced | None = None  # the function it replaced, shut down
