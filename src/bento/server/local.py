"""A Bento box in this process, for trying and testing functions without Tor.

``local_box()`` runs the real server (its registry, API and sandbox: bubblewrap,
seccomp, rlimits) and hands back the real client bound to it in process, so a function
runs exactly as on a box, and nothing touches the network (its broker grants nothing).
See the example in ``bento.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from httpx_ws.transport import ASGIWebSocketTransport

from bento.client.box import Box
from bento.errors import BentoError
from bento.protocol.policy import NodePolicy
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.server import broker, descriptor, identity
from bento.server.api import create_app
from bento.server.config import ServerConfig
from bento.server.registry import Registry


@contextlib.asynccontextmanager
async def local_box(*, policy: NodePolicy | None = None, **settings: Any) -> AsyncIterator[Box]:
    """A client bound to a fresh in-process box; everything of it is gone on exit."""
    scratch = Path(tempfile.mkdtemp(prefix="bento-local-"))
    try:
        config = ServerConfig(
            state_dir=scratch / "state",
            onion=False,
            advertise=False,
            policy=policy or NodePolicy(),
            **settings,
        )
        try:
            # A box to try functions on: no CPU quota on all of Bento is needed for that.
            sandbox = SandboxHost(config.policy, config.state_dir, accept_unenforced=["cpu_share"])
        except SandboxUnavailable as exc:
            raise BentoError(
                f"this host cannot sandbox functions: {exc}", fix="see docs/operator.md"
            ) from None
        try:
            boot_id = secrets.token_urlsafe(8)
            registry = Registry(config, boot_id, sandbox, broker.closed_gate())
            registry.reset_storage()
            signed = descriptor.of_box(
                identity.load_or_create(config.state_dir), registry, fingerprint="0" * 40, nickname="local"
            )
            transport = ASGIWebSocketTransport(app=create_app(registry, lambda: signed))
            async with (
                registry.running(),  # leaving it stops every session
                Box(signed.verify().onion, socks=None, base_url="http://local", transport=transport) as box,
            ):
                yield box
        finally:
            await asyncio.to_thread(sandbox.close)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
