"""Talking to one Bento box over Tor: descriptor, deploy, invoke, attach, sessions, shutdown."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from bento.client.discovery import BoxInfo
from bento.client.keyring import Deployment
from bento.client.stream import SessionStream
from bento.errors import BentoError
from bento.protocol.descriptor import Descriptor, SignedDescriptor
from bento.protocol.manifest import Manifest
from bento.protocol.messages import (
    CodeKind,
    ErrorBody,
    InvokeRequest,
    InvokeResponse,
    SessionInfo,
    SessionList,
    ShutdownResponse,
    UploadResponse,
)
from bento.protocol.policy import violations

Model = TypeVar("Model", bound=BaseModel)
Progress = Callable[[int, int], None]
TIMEOUT = httpx.Timeout(120.0, connect=120.0)  # an onion service can take a while to reach
UPLOAD_CHUNK = 64 << 10


class Box:
    """One box, reached at ``http://<onion>.onion`` through a Tor SOCKS port.

    ``base_url`` overrides the address (a box's TCP listener reached through an exit,
    or a local test server); ``socks=None`` then connects directly.
    """

    def __init__(
        self, onion: str, *, socks: str | None, info: BoxInfo | None = None, base_url: str | None = None
    ) -> None:
        self.onion = onion
        self.info = info
        self.socks = socks
        self.base_url = base_url or f"http://{onion}.onion"
        proxy = f"socks5://{socks}" if socks else None
        self._http = httpx.AsyncClient(base_url=self.base_url, proxy=proxy, timeout=TIMEOUT)
        self.name = info.nickname if info else onion[:16]

    async def __aenter__(self) -> Box:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    # --- requests -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        model: type[Model],
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Model:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise BentoError(
                f"cannot reach the box {self.name} over Tor: {type(exc).__name__}: {exc}",
                fix="check that the Tor client is running (BENTO_SOCKS) and that the box is up",
            ) from None
        if response.status_code >= 400:
            raise _refusal(self.name, response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise BentoError(f"the box {self.name} sent a malformed {model.__name__}: {exc}") from None

    async def descriptor(self) -> Descriptor:
        """The box's descriptor, verified: signed by the key of the onion address we reached,
        and (when the box was found in the directory) naming the relay that advertised it."""
        signed = await self._request("GET", "/v1/descriptor", SignedDescriptor)
        descriptor = signed.verify()
        if descriptor.onion != self.onion:
            raise BentoError(
                f"the box at {self.onion}.onion sent the descriptor of {descriptor.onion}.onion",
                fix="do not use this box",
            )
        if self.info is not None and descriptor.relay_fingerprint != self.info.fingerprint:
            raise BentoError(
                f"the box's descriptor names relay {descriptor.relay_fingerprint}, but relay "
                f"{self.info.fingerprint} advertises it",
                fix="do not use this box: its advertisement and its descriptor disagree",
            )
        return descriptor

    async def deploy(
        self,
        code: Path | bytes,
        manifest: Manifest,
        *,
        kind: CodeKind | None = None,
        progress: Progress | None = None,
    ) -> Deployment:
        """Upload ``code`` (a .py file, a directory, or bytes) and return its deployment record."""
        raw, detected = _read_code(code)
        body = json.dumps(
            {
                "manifest": manifest.model_dump(mode="json"),
                "kind": (kind or detected).value,
                "code": base64.b64encode(raw).decode(),
            }
        ).encode()
        descriptor = await self.descriptor()
        if len(raw) > descriptor.policy.max_upload_bytes:  # refuse before sending a byte of it
            raise BentoError(
                f"the code is {len(raw)} bytes; the box {self.name} accepts at most "
                f"{descriptor.policy.max_upload_bytes} (its policy's max_upload_bytes)",
                fix="make the upload smaller (leave data out: fetch it at run time), or use another box",
            )
        problems = violations(manifest.needs, descriptor.policy)
        if problems:  # the box would refuse it: say why before uploading anything
            raise BentoError(
                f"the box {self.name} would refuse this function: " + "; ".join(problems),
                fix="lower the manifest's needs, or find a box that fits with `bento boxes --fits MANIFEST`",
            )
        uploaded = await self._upload(body, progress)
        return Deployment(
            function_id=uploaded.function_id,
            name=manifest.name,
            onion=self.onion,
            relay_fingerprint=descriptor.relay_fingerprint,
            relay_nickname=descriptor.relay_nickname,
            invocation_token=uploaded.invocation_token,
            shutdown_token=uploaded.shutdown_token,
            boot_id=uploaded.boot_id,
            entry_points=uploaded.entry_points,
            deployed_at=time.time(),
        )

    async def _upload(self, body: bytes, progress: Progress | None) -> UploadResponse:
        return await self._request(
            "POST",
            "/v1/functions",
            UploadResponse,
            content=_chunks(body, progress),
            headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
        )

    async def invoke(
        self,
        deployment: Deployment,
        entry: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Start a session running ``entry(*args, **kwargs)``; returns the session id."""
        request = InvokeRequest(entry=entry, args=args or [], kwargs=kwargs or {})
        response = await self._request(
            "POST",
            f"/v1/functions/{deployment.function_id}/sessions",
            InvokeResponse,
            token=deployment.invocation_token,
            json=request.model_dump(mode="json"),
        )
        return response.session_id

    async def sessions(self, deployment: Deployment) -> SessionList:
        return await self._request(
            "GET",
            f"/v1/functions/{deployment.function_id}/sessions",
            SessionList,
            token=deployment.invocation_token,
        )

    async def session(self, deployment: Deployment, session_id: str) -> SessionInfo:
        return await self._request(
            "GET", f"/v1/sessions/{session_id}", SessionInfo, token=deployment.invocation_token
        )

    async def kill(self, deployment: Deployment, session_id: str) -> SessionInfo:
        """Kill one session; returns its state once it has ended. Its function goes on."""
        return await self._request(
            "DELETE", f"/v1/sessions/{session_id}", SessionInfo, token=deployment.invocation_token
        )

    async def shutdown(self, deployment: Deployment) -> ShutdownResponse:
        return await self._request(
            "DELETE",
            f"/v1/functions/{deployment.function_id}",
            ShutdownResponse,
            token=deployment.shutdown_token,
        )

    async def attach(self, deployment: Deployment, session_id: str) -> SessionStream:
        """Open the session's stream; output resumes after the last byte any client acknowledged."""
        url = self.base_url.replace("http://", "ws://", 1) + f"/v1/sessions/{session_id}/stream"
        try:
            websocket = await connect(
                url,
                proxy=f"socks5h://{self.socks}" if self.socks else None,
                additional_headers={"Authorization": f"Bearer {deployment.invocation_token}"},
                open_timeout=120,
                compression=None,  # see the server: no deflate on session streams
                max_size=4 << 20,
                ping_interval=30,
                ping_timeout=120,
            )
        except InvalidStatus as exc:
            raise BentoError(
                f"the box {self.name} refused the stream: HTTP {exc.response.status_code}"
            ) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise BentoError(
                f"cannot open session {session_id} on the box {self.name}: {type(exc).__name__}: {exc}",
                fix="check that the Tor client is running and the box is up; then attach again",
            ) from None
        return SessionStream(websocket, session_id)


def _refusal(box: str, response: httpx.Response) -> BentoError:
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        return BentoError(f"the box {box} answered HTTP {response.status_code}")
    return BentoError(f"the box {box} refused: {body.error}", fix=body.fix)


def _read_code(code: Path | bytes) -> tuple[bytes, CodeKind]:
    if isinstance(code, bytes):
        return code, CodeKind.MODULE
    if code.is_dir():
        return _archive(code), CodeKind.TAR_GZ
    try:
        raw = code.read_bytes()
    except OSError as exc:
        raise BentoError(f"cannot read {code}: {exc.strerror}") from None
    if code.name.endswith((".tar.gz", ".tgz")):
        return raw, CodeKind.TAR_GZ
    return raw, CodeKind.MODULE


def _archive(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            archive.add(path, arcname=str(path.relative_to(directory)))
    return buffer.getvalue()


async def _chunks(body: bytes, progress: Progress | None) -> AsyncIterator[bytes]:
    for start in range(0, len(body), UPLOAD_CHUNK):
        yield body[start : start + UPLOAD_CHUNK]
        if progress is not None:
            progress(min(start + UPLOAD_CHUNK, len(body)), len(body))
