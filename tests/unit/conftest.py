"""An in-process Bento box for unit tests: the real API and registry, no Tor, no network.

Sessions really run: each invocation starts ``python -m bento.runtime`` in a subprocess,
exactly as on a box.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bento.protocol.descriptor import SignedDescriptor
from bento.server import descriptor, identity
from bento.server.api import create_app
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

    async def upload(self, source: str, *, name: str = "test", module: str = "main") -> Uploaded:
        response = await self.http.post("/v1/functions", json=upload_body(source, name=name, module=module))
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
        """Poll GET /v1/sessions/{id} until the session has ended (or, with ended=False, has started)."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.session_info(function, session_id)
            session = self.registry.sessions[session_id]
            if (info["state"] != "running") if ended else session.instance is not None:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"session {session_id} still {info['state']} after {timeout} s")
            await asyncio.sleep(0.02)


def upload_body(
    source: str | bytes, *, name: str = "test", module: str = "main", kind: str = "module"
) -> dict[str, Any]:
    raw = source.encode() if isinstance(source, str) else source
    return {
        "manifest": {"name": name, "module": module},
        "kind": kind,
        "code": base64.b64encode(raw).decode(),
    }


def make_registry(tmp_path: Path, **limits: Any) -> tuple[Registry, SignedDescriptor]:
    config = ServerConfig(state_dir=tmp_path / "state", onion=False, advertise=False, **limits)
    registry = Registry(config, BOOT_ID)
    registry.reset_storage()
    signed = descriptor.build(
        identity.load_or_create(config.state_dir),
        config,
        fingerprint="A" * 40,
        nickname="test",
        boot_id=BOOT_ID,
    )
    return registry, signed


@pytest.fixture
def box_limits() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change the box's ServerConfig limits."""
    return {}


@pytest.fixture
async def box(tmp_path: Path, box_limits: dict[str, Any]) -> AsyncIterator[LocalBox]:
    registry, signed = make_registry(tmp_path, **box_limits)
    app = create_app(registry, lambda: signed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://box", timeout=30) as client:
        try:
            yield LocalBox(registry, signed, client)
        finally:
            await registry.aclose()
