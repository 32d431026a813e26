"""Helpers for an in-process Bento box: the real API and registry, no Tor, no network.

Sessions really run: each invocation starts a sandboxed instance (bubblewrap, seccomp,
rlimits), exactly as on a box. Where this host cannot sandbox, the tests that need it skip,
except in CI (``CI=true``), where they fail: a CI run that skipped them proved nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from httpx_ws import aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from bento.client import Box, Deployment
from bento.protocol.descriptor import SignedDescriptor
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs, NodePolicy
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.sandbox.spec import Spec
from bento.server import broker, descriptor, identity
from bento.server.api import create_app
from bento.server.config import ServerConfig
from bento.server.registry import Registry

BOOT_ID = "boot-1"


def without_sandbox(why: Exception) -> NoReturn:
    """Skip a test that needs a sandbox this host cannot make; in CI (``CI=true``) fail it:
    a CI run that skipped it proved nothing."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and this host cannot sandbox instances: {why}")
    pytest.skip(f"this host cannot sandbox instances: {why}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(repr=False)
class Uploaded(Deployment):
    """A deployment, with the raw headers that tests of the API's edges need."""

    body: dict[str, Any] = field(default_factory=dict)

    @property
    def invoke_auth(self) -> dict[str, str]:
        return bearer(self.invocation_token)

    @property
    def shutdown_auth(self) -> dict[str, str]:
        return bearer(self.shutdown_token)

    def session_auth(self, session_id: str) -> dict[str, str]:
        """The session right of a session this deployment opened."""
        return bearer(self.session_rights[session_id])


class LocalBox:
    """The app and its registry; ``client`` is the real Bento client bound to the app in
    process, ``http`` a raw HTTP client for requests no client would send."""

    def __init__(
        self, registry: Registry, signed: SignedDescriptor, client: Box, http: httpx.AsyncClient
    ) -> None:
        self.registry = registry
        self.signed = signed
        self.client = client
        self.http = http

    async def upload(
        self, source: str, *, name: str = "test", module: str = "main", needs: dict[str, Any] | None = None
    ) -> Uploaded:
        manifest = Manifest.model_validate({"name": name, "module": module, "needs": needs or {}})
        deployed = await self.client.deploy(source.encode(), manifest)
        return Uploaded(**asdict(deployed), body={"boot_id": deployed.boot_id})

    async def invoke(self, function: Deployment, entry: str, *args: Any, **kwargs: Any) -> str:
        return await self.client.invoke(function, entry, list(args), kwargs)

    async def session_info(self, function: Deployment, session_id: str) -> dict[str, Any]:
        return (await self.client.session(function, session_id)).model_dump(mode="json")

    async def wait_state(
        self, function: Deployment, session_id: str, *, ended: bool = True, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Wait until the session has ended (or, with ended=False, its instance exists); its info."""
        session = self.registry.sessions[session_id]
        event = session.done if ended else session.started
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"session {session_id} still {session.state} after {timeout} s") from None
        return await self.session_info(function, session_id)

    def websocket(self, path: str, token: str | None) -> Any:
        """A raw WebSocket to the app, for tests of the wire protocol itself."""
        headers = bearer(token) if token else {}
        return aconnect_ws(path, self.client._http, headers=headers, keepalive_ping_interval_seconds=None)

    def websocket_with(self, path: str, headers: dict[str, str]) -> Any:
        """A raw WebSocket to the app with these request headers."""
        return aconnect_ws(path, self.client._http, headers=headers, keepalive_ping_interval_seconds=None)


@contextlib.asynccontextmanager
async def serving(registry: Registry, signed: SignedDescriptor) -> AsyncIterator[LocalBox]:
    """The real client and a raw HTTP client, both bound to the app in process."""
    app = create_app(registry, lambda: signed)
    onion = signed.verify().onion
    transport = ASGIWebSocketTransport(app=app)
    async with (
        Box(onion, socks=None, base_url="http://box", transport=transport) as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://box", timeout=30) as http,
    ):
        yield LocalBox(registry, signed, client, http)


def upload_body(
    source: str | bytes,
    *,
    name: str = "test",
    module: str = "main",
    kind: str = "module",
    needs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    raw = source.encode() if isinstance(source, str) else source
    manifest: dict[str, Any] = {"name": name, "module": module}
    if needs is not None:
        manifest["needs"] = needs
    return {"manifest": manifest, "kind": kind, "code": base64.b64encode(raw).decode()}


@contextlib.contextmanager
def local_registry(
    *, policy: dict[str, Any] | None = None, **settings: Any
) -> Iterator[tuple[Registry, SignedDescriptor]]:
    """A registry with a real sandbox; skips the test where this host has none."""
    scratch = Path(tempfile.mkdtemp(prefix="bento-unit-"))
    config = ServerConfig(
        state_dir=scratch / "state",
        onion=False,
        advertise=False,
        policy=NodePolicy(**(policy or {})),
        **settings,
    )
    try:
        try:
            sandbox = SandboxHost(config.policy, config.state_dir, accept_unenforced=["cpu_share"])
        except SandboxUnavailable as exc:
            without_sandbox(exc)
        try:
            registry = Registry(config, BOOT_ID, sandbox, broker.closed_gate())  # no network here
            registry.reset_storage()
            signed = descriptor.of_box(
                identity.load_or_create(config.state_dir), registry, fingerprint="A" * 40, nickname="test"
            )
            yield registry, signed
        finally:
            sandbox.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.asynccontextmanager
async def box_in_its_own_task(*, warm: int = 0, **limits: Any) -> AsyncIterator[LocalBox]:
    """A local box (``limits``: ServerConfig settings) served by a task of its own: the app and
    its WebSockets live there, as the client's transport must be left in the task that entered
    it. ``warm``: sandboxes its pool keeps ready, as the daemon keeps them (0: no pool)."""
    ready: asyncio.Future[LocalBox] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def serve() -> None:
        with local_registry(**limits, **({"pool_size": warm} if warm else {})) as (registry, signed):
            async with asyncio.TaskGroup() as tasks:
                keepers = [
                    tasks.create_task(registry.sandbox.keep_pool(warm)),
                    tasks.create_task(registry.sandbox.watch_forever()),
                ] if warm else []  # fmt: skip
                try:
                    async with registry.running(), serving(registry, signed) as local:
                        if warm:
                            async with asyncio.timeout(30):
                                await registry.sandbox.pool.stocked(Spec.of(Needs()).shape, warm)
                        ready.set_result(local)
                        await done.wait()
                finally:
                    for keeper in keepers:
                        keeper.cancel()

    server = asyncio.create_task(serve())
    waiting = asyncio.ensure_future(ready)
    await asyncio.wait([server, waiting], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        waiting.cancel()
        await server  # it failed, or skipped: say why
    try:
        yield ready.result()
    finally:
        done.set()
        await server
