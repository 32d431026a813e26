"""Talking to one Bento box over Tor: descriptor, deploy, invoke, attach, sessions, logs, shutdown.

The box is reached through an ``httpx`` transport: by default Tor's SOCKS port with
optimistic data (``tor_socks``: a round trip less per connection); in tests,
``httpx_ws.transport.ASGIWebSocketTransport(app)`` runs this same client against the
server's app in process (HTTP and the session WebSockets alike).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from httpx_ws import AsyncWebSocketSession, WebSocketUpgradeError, aconnect_ws
from pydantic import BaseModel, ValidationError

from bento.client import replies, session_rights, tor_socks
from bento.client.keyring import Deployment
from bento.client.names import box_name
from bento.client.stream import Link, Retry, SessionStream
from bento.errors import BentoError, ProtocolError, TransportError, describe_validation
from bento.protocol.manifest import Manifest
from bento.protocol.messages import (
    CodeKind,
    Invoked,
    InvokeRequest,
    InvokeResponse,
    Log,
    Replaced,
    SessionInfo,
    SessionList,
    SessionLogs,
    ShutdownResponse,
    UploadResponse,
)

if TYPE_CHECKING:
    # Imported where they are used: an invocation (`bento invoke`, a new process each time)
    # needs neither link cover, nor discovery (Stem), nor uploads, nor a descriptor's
    # signature (cryptography), and importing them would double its start.
    from bento.client.cover import Cover
    from bento.client.discovery import BoxInfo
    from bento.client.upload import Progress
    from bento.protocol.descriptor import Descriptor

Model = TypeVar("Model", bound=BaseModel)
TIMEOUT = httpx.Timeout(120.0, connect=120.0)  # an onion service can take a while to reach
OnLog = Callable[[Log], None] | None
CONNECT_ATTEMPTS = 3  # a request that Tor could not connect is tried this often
HEADER_INVOCATION = 6 << 10  # larger invocations go in the first message (one more round trip)


class Box:
    """One box, reached at ``http://<onion>.onion`` through a Tor SOCKS port.

    ``base_url`` overrides the address (a box's TCP listener reached through an exit,
    or a local test server); ``socks=None`` then connects directly. ``transport`` replaces
    the network altogether (see the module's docstring). ``retry`` says how hard session
    streams try to re-attach when their connection drops. ``nickname``: its relay's, where
    known without ``info`` (a keyring's deployment), to name the box in messages.
    """

    def __init__(
        self,
        onion: str,
        *,
        socks: str | None,
        info: BoxInfo | None = None,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: Retry | None = None,
        nickname: str | None = None,
    ) -> None:
        self.onion = onion
        self.info = info
        self.socks = socks
        self.retry = retry or Retry()
        self.base_url = base_url or f"http://{onion}.onion"
        if socks and transport is None:  # a request goes with the SOCKS handshake: one round trip less
            transport = tor_socks.transport(socks)
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=TIMEOUT)
        self.name = box_name(info.nickname if info else nickname, onion)  # in every message
        self.verified: Descriptor | None = None  # the descriptor, once fetched and checked

    async def __aenter__(self) -> Box:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
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
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
                break
            except httpx.HTTPError as exc:
                # Only a SOCKS refusal (Tor could not reach the onion service) is safe to retry.
                if not isinstance(exc, httpx.ProxyError) or attempt == CONNECT_ATTEMPTS:
                    raise replies.unreachable(self.name, exc) from None
                await asyncio.sleep(attempt)
        if response.status_code >= 400:
            raise replies.refusal(self.name, response.status_code, response.content)
        return replies.parsed(self.name, model, response.content)

    async def descriptor(self) -> Descriptor:
        """The box's descriptor, verified: signed by the key of the onion address we reached,
        and (when the box was found in the directory) naming the relay that advertised it."""
        from bento.protocol.descriptor import SignedDescriptor

        signed = await self._request("GET", "/v1/descriptor", SignedDescriptor)
        descriptor = signed.verify()
        if descriptor.onion != self.onion:
            raise ProtocolError(
                f"the box at {self.onion}.onion sent the descriptor of {descriptor.onion}.onion",
                fix="do not use this box",
            )
        if self.info is not None and descriptor.relay_fingerprint != self.info.fingerprint:
            raise ProtocolError(
                f"the box's descriptor names relay {descriptor.relay_fingerprint}, but relay "
                f"{self.info.fingerprint} advertises it",
                fix="do not use this box: its advertisement and its descriptor disagree",
            )
        self.verified = descriptor
        return descriptor

    async def deploy(
        self,
        code: Path | bytes,
        manifest: Manifest,
        *,
        kind: CodeKind | None = None,
        progress: Progress | None = None,
        require_sgx: bool = False,
    ) -> Deployment:
        """Upload ``code`` (a .py file, a directory, or bytes) and return its deployment record.
        ``require_sgx``: refuse, before uploading, a box whose descriptor does not say that
        functions run in an SGX enclave (``runtime.conclave``)."""
        deployment, _ = await self.replace(
            None, code, manifest, kind=kind, progress=progress, require_sgx=require_sgx
        )
        return deployment

    async def replace(
        self,
        old: Deployment | None,
        code: Path | bytes,
        manifest: Manifest,
        *,
        keep_storage: bool = True,
        kind: CodeKind | None = None,
        progress: Progress | None = None,
        require_sgx: bool = False,
    ) -> tuple[Deployment, Replaced | None]:
        """:meth:`deploy` in place of ``old``, a function of this box, which the box shuts down
        once the new one is installed; with ``keep_storage`` the new function takes over its
        storage (:class:`Refused` ``storage-too-small`` where it would not fit the manifest)."""
        if old is not None and old.onion != self.onion:
            raise BentoError(
                f"{old.name} ({old.function_id}) is on another box ({old.box}), and "
                "storage does not move between boxes; nothing was uploaded",
                fix=f"deploy to {old.box}, or replace it with fresh storage",
            )
        from bento.client.upload import read_code, refuse_before_upload, upload_body

        raw, detected = read_code(code)
        body = upload_body(raw, kind or detected, manifest, replaces=old, keep_storage=keep_storage)
        descriptor = await self.descriptor()
        refuse_before_upload(self.name, descriptor, len(raw), manifest, require_sgx=require_sgx)
        uploaded = await self._upload(body, progress)
        deployment = Deployment(
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
            storage_mb=manifest.needs.storage_mb,
        )
        return deployment, uploaded.replaced

    async def _upload(self, body: bytes, progress: Progress | None) -> UploadResponse:
        from bento.client.upload import chunks

        return await self._request(
            "POST",
            "/v1/functions",
            UploadResponse,
            content=chunks(body, progress),
            headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
        )

    async def invoke(
        self,
        deployment: Deployment,
        entry: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Start a session running ``entry(*args, **kwargs)``; returns the session id (its
        session right is kept in ``deployment``: see ``bento.client.session_rights``)."""
        request = _invocation(entry, args, kwargs)
        response = await self._request(
            "POST",
            f"/v1/functions/{deployment.function_id}/sessions",
            InvokeResponse,
            token=deployment.invocation_token,
            json=request.model_dump(mode="json"),
        )
        session_rights.keep(deployment, response.session_id, response.session_right)
        return response.session_id

    async def sessions(self, deployment: Deployment) -> SessionList:
        """Every session for the owner (shutdown token); else the ones this deployment opened."""
        token, headers = session_rights.listing(deployment)
        path = f"/v1/functions/{deployment.function_id}/sessions"
        return await self._request("GET", path, SessionList, token=token, headers=headers)

    async def session(self, deployment: Deployment, session_id: str) -> SessionInfo:
        token = session_rights.bearer(deployment, session_id)
        return await self._request("GET", f"/v1/sessions/{session_id}", SessionInfo, token=token)

    async def kill(self, deployment: Deployment, session_id: str) -> SessionInfo:
        """Kill one session; returns its state once it has ended. Its function goes on."""
        token = session_rights.bearer(deployment, session_id)
        return await self._request("DELETE", f"/v1/sessions/{session_id}", SessionInfo, token=token)

    async def shutdown(self, deployment: Deployment) -> ShutdownResponse:
        path = f"/v1/functions/{deployment.function_id}"
        return await self._request("DELETE", path, ShutdownResponse, token=deployment.shutdown_token)

    async def logs(self, deployment: Deployment, session_id: str) -> SessionLogs:
        """What the function printed in this session, as far as the box still holds it."""
        token = session_rights.bearer(deployment, session_id)
        return await self._request("GET", f"/v1/sessions/{session_id}/logs", SessionLogs, token=token)

    async def start(
        self,
        deployment: Deployment,
        entry: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        on_log: Callable[[Log], None] | None = None,
        cover: Cover | None = None,
    ) -> SessionStream:
        """Invoke ``entry(*args, **kwargs)`` and stream the session, in one round trip.

        The invocation travels in the WebSocket upgrade request, so its output follows the
        box's answer at once; ``stream.session_id`` names the session for a later attach.
        With ``cover``, the invocation goes inside the link's cover, after its lead (client.cover).
        """
        request = _invocation(entry, args, kwargs)
        encoded = base64.urlsafe_b64encode(request.model_dump_json().encode()).decode()
        in_header = len(encoded) <= HEADER_INVOCATION and cover is None
        if cover is not None:
            cover.check(self.verified or await self.descriptor(), self.name)
        link = await self._open(
            f"/v1/functions/{deployment.function_id}/invoke",
            deployment.invocation_token,
            {"Bento-Invocation": encoded} if in_header else {},
            cover=cover,
        )
        try:
            if cover is not None:
                from bento.client.cover import CoveredLink

                assert isinstance(link, CoveredLink)
                await link.lead()
            invoked = await self._invoked(link, None if in_header else request.model_dump_json())
        except BaseException:
            await link.close()
            raise
        session_rights.keep(deployment, invoked.session_id, invoked.session_right)
        return self._stream(link, deployment, invoked.session_id, on_log, cover)

    async def _invoked(self, link: Link, request: str | None) -> Invoked:
        try:  # a link that breaks while the request goes is unreachable too, not a library's error
            async with asyncio.timeout(TIMEOUT.read):
                if request is not None:
                    await link.ws.send_text(request)
                text = await link.ws.receive_text()
        except TimeoutError:
            raise TransportError(f"the box {self.name} did not answer the invocation in time") from None
        except Exception as exc:  # the link broke, or the box sent bytes first
            raise replies.unreachable(self.name, exc) from None
        return replies.invoked(self.name, text)

    async def attach(
        self,
        deployment: Deployment,
        session_id: str,
        *,
        on_log: Callable[[Log], None] | None = None,
        cover: Cover | None = None,
        logs_from: int = 0,
    ) -> SessionStream:
        """Open the session's stream; output resumes after the last byte any client acknowledged,
        logs at ``logs_from`` (the ``log_offset`` a stream of this session reached before)."""
        if cover is not None:
            cover.check(self.verified or await self.descriptor(), self.name)
        link = await self._attach(deployment, session_id, logs_from, cover)
        stream = self._stream(link, deployment, session_id, on_log, cover)
        stream.log_offset = logs_from
        return stream

    def _stream(
        self, link: Link, deployment: Deployment, session: str, on_log: OnLog, cover: Cover | None
    ) -> SessionStream:
        attach = functools.partial(self._attach, deployment, session, cover=cover)  # (logs_from)
        return SessionStream(link, session, attach, retry=self.retry, on_log=on_log)

    async def _attach(
        self, deployment: Deployment, session: str, logs_from: int, cover: Cover | None
    ) -> Link:
        params = {"logs_from": str(logs_from)}
        token = session_rights.bearer(deployment, session)
        return await self._open(f"/v1/sessions/{session}/stream", token, {}, params, cover)

    async def _open(
        self,
        path: str,
        token: str,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
        cover: Cover | None = None,
    ) -> Link:
        if cover is not None:
            headers = {**headers, **cover.header()}
        stack = contextlib.AsyncExitStack()
        try:
            ws: AsyncWebSocketSession = await stack.enter_async_context(
                aconnect_ws(
                    path,
                    self._http,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                    params=params,
                    max_message_size_bytes=4 << 20,
                    queue_size=64,  # with 256 KiB messages: at most 16 MiB waits in the client
                    keepalive_ping_interval_seconds=30,
                    keepalive_ping_timeout_seconds=120,
                )
            )
        except WebSocketUpgradeError as exc:
            await stack.aclose()
            content = b""
            with contextlib.suppress(httpx.HTTPError):
                content = await exc.response.aread()
            raise replies.refusal(self.name, exc.response.status_code, content) from None
        except (httpx.HTTPError, OSError) as exc:
            await stack.aclose()
            raise replies.unreachable(self.name, exc) from None
        if cover is None:
            return Link(ws, stack)
        from bento.client.cover import CoveredLink

        return await CoveredLink.open(ws, stack, cover)


def _invocation(entry: str, args: list[Any] | None, kwargs: dict[str, Any] | None) -> InvokeRequest:
    try:
        return InvokeRequest(entry=entry, args=args or [], kwargs=kwargs or {})
    except ValidationError as exc:
        raise BentoError(
            f"cannot invoke {entry!r}: {describe_validation(exc)}",
            fix="name an entry point (a Python identifier) and pass JSON arguments",
        ) from None
