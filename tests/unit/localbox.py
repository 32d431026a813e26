"""Helpers for an in-process Bento box: the real API and registry, no Tor, no network.

Sessions really run: each invocation starts a sandboxed instance (bubblewrap, seccomp,
rlimits), exactly as on a box. Where this host cannot sandbox, the tests that need it skip.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bento.protocol.descriptor import SignedDescriptor
from bento.protocol.policy import NodePolicy
from bento.sandbox import launch
from bento.sandbox.launch import SandboxHost, SandboxUnavailable
from bento.server import broker, descriptor, identity
from bento.server.config import ServerConfig
from bento.server.registry import Registry

BOOT_ID = "boot-1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Uploaded:
    function_id: str
    invocation_token: str
    shutdown_token: str
    entry_points: list[str]
    body: dict[str, Any] = field(repr=False)

    @property
    def invoke_auth(self) -> dict[str, str]:
        return bearer(self.invocation_token)

    @property
    def shutdown_auth(self) -> dict[str, str]:
        return bearer(self.shutdown_token)


class LocalBox:
    """The app, its registry and an HTTP client bound to it."""

    def __init__(self, registry: Registry, signed: SignedDescriptor, client: httpx.AsyncClient) -> None:
        self.registry = registry
        self.signed = signed
        self.http = client

    async def upload(
        self, source: str, *, name: str = "test", module: str = "main", needs: dict[str, Any] | None = None
    ) -> Uploaded:
        body = upload_body(source, name=name, module=module, needs=needs)
        response = await self.http.post("/v1/functions", json=body)
        assert response.status_code == 201, response.text
        body = response.json()
        return Uploaded(
            body["function_id"],
            body["invocation_token"],
            body["shutdown_token"],
            body["entry_points"],
            body,
        )

    async def invoke(self, function: Uploaded, entry: str, *args: Any, **kwargs: Any) -> str:
        response = await self.http.post(
            f"/v1/functions/{function.function_id}/sessions",
            json={"entry": entry, "args": list(args), "kwargs": kwargs},
            headers=function.invoke_auth,
        )
        assert response.status_code == 201, response.text
        session_id: str = response.json()["session_id"]
        return session_id

    async def session_info(self, function: Uploaded, session_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/sessions/{session_id}", headers=function.invoke_auth)
        assert response.status_code == 200, response.text
        info: dict[str, Any] = response.json()
        return info

    async def wait_state(
        self, function: Uploaded, session_id: str, *, ended: bool = True, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Wait until the session has ended (or, with ended=False, its instance exists); its info."""
        session = self.registry.sessions[session_id]
        event = session.done if ended else session.started
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"session {session_id} still {session.state} after {timeout} s") from None
        return await self.session_info(function, session_id)


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


_hosts = itertools.count()


def _private_uids(slots: int) -> None:
    """Give this sandbox host instance uids that no earlier test used.

    Each server claims a block of uids, and the next test's server would claim the block
    the previous one just released. But a killed instance leaves its inner bubblewrap
    process as a zombie of PID 1 until PID 1 reaps it (in a container, that can take
    seconds), and it counts against RLIMIT_NPROC of its uid: reusing the uid at once
    makes the next sandbox fail to start with EAGAIN.
    """
    if hasattr(launch, "UID_BASE"):
        launch.UID_BASE = 10_000_000 + (os.getpid() % 1024) * 1_000_000 + (next(_hosts) % 3000) * slots


@contextlib.asynccontextmanager
async def serving(registry: Registry) -> AsyncIterator[Registry]:
    """The registry running (its task group owning every session) in a task of its own, as in
    the daemon: a fixture's set-up and tear-down may run in different tasks, a task group may not."""
    ready, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with registry.running():
            ready.set()
            await stop.wait()

    runner = asyncio.create_task(run())
    await asyncio.wait([runner, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    try:
        yield registry
    finally:
        stop.set()
        await runner


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
        _private_uids(config.policy.instances_total)
        try:
            sandbox = SandboxHost(config.policy, config.state_dir)
        except SandboxUnavailable as exc:
            pytest.skip(f"this host cannot sandbox instances: {exc}")
        try:
            registry = Registry(config, BOOT_ID, sandbox, broker.closed_gate())  # no network here
            registry.reset_storage()
            signed = descriptor.build(
                identity.load_or_create(config.state_dir),
                config,
                fingerprint="A" * 40,
                nickname="test",
                boot_id=BOOT_ID,
                enforced=sandbox.enforced(),
                python=sandbox.python_version,
            )
            yield registry, signed
        finally:
            sandbox.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
