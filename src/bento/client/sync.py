"""The client's synchronous face, for scripts and for functions that call other boxes.

Inside a function whose manifest asks for ``call_boxes`` (and a box that offers the
``bento`` package), the same library deploys and talks to functions on other boxes,
over Tor, through the box's broker::

    from bento.client import sync
    from bento.protocol.manifest import Manifest

    def main(source):
        target = sync.boxes()[0]                 # from the consensus, via the broker
        with sync.connect(target) as box:        # its descriptor is verified first
            deployment = box.deploy(source.encode(), Manifest(name="callee"))
            output, ended = box.call(deployment, "main", ["hi"])
            box.shutdown(deployment)
        return ended.result

The tokens a function receives (in ``deployment``) live only in its memory: the box
never sees them unless the function returns or sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from bento.client.box import Box
from bento.client.discovery import BoxInfo
from bento.client.keyring import Deployment
from bento.client.stream import Retry, SessionStream
from bento.client.via_broker import BrokerTransport, inside_a_function
from bento.errors import BentoError
from bento.protocol.descriptor import Descriptor
from bento.protocol.manifest import Manifest
from bento.protocol.messages import Ended, SessionInfo, ShutdownResponse


def boxes(control: str | None = None) -> list[BoxInfo]:
    """Every Bento box in the consensus: inside a function, as the box's own tor sees it;
    outside, through the tor control port ``control``."""
    if control is not None or not inside_a_function():
        from bento.client.discovery import discover

        if control is None:
            raise BentoError("outside a function, pass the tor control port (control='127.0.0.1:9051')")
        return discover(control)
    from bento.runtime import net

    reply, _ = net._ask({"op": "tor.boxes"})
    return [BoxInfo(**{**b, "flags": tuple(b["flags"])}) for b in reply["boxes"]]


def connect(box: BoxInfo | str, *, socks: str | None = None, retry: Retry | None = None) -> SyncBox:
    """A box (found by :func:`boxes`, or an onion address): inside a function over the
    broker, outside through the Tor SOCKS port ``socks``. ``retry``: how hard session
    streams re-attach when the connection drops (give up sooner inside a function)."""
    info = box if isinstance(box, BoxInfo) else None
    onion = box.onion if isinstance(box, BoxInfo) else box.removesuffix(".onion")
    if inside_a_function():
        return SyncBox(Box(onion, socks=None, info=info, transport=BrokerTransport(), retry=retry))
    return SyncBox(Box(onion, socks=socks, info=info, retry=retry))


class SyncBox:
    """:class:`bento.client.Box`, one blocking call at a time, on an event loop of its own."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.last_ended: Ended | None = None  # how the last streamed session ended
        self._runner = asyncio.Runner()

    def __enter__(self) -> SyncBox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self.box.__aexit__(None, None, None))
        finally:
            self._runner.close()

    def descriptor(self) -> Descriptor:
        return self._runner.run(self.box.descriptor())

    def deploy(self, code: Path | bytes, manifest: Manifest) -> Deployment:
        return self._runner.run(self.box.deploy(code, manifest))

    def invoke(
        self,
        deployment: Deployment,
        entry: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        return self._runner.run(self.box.invoke(deployment, entry, args, kwargs))

    def session(self, deployment: Deployment, session_id: str) -> SessionInfo:
        return self._runner.run(self.box.session(deployment, session_id))

    def shutdown(self, deployment: Deployment) -> ShutdownResponse:
        return self._runner.run(self.box.shutdown(deployment))

    def call(
        self,
        deployment: Deployment,
        entry: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        input: bytes | None = None,
    ) -> tuple[bytes, Ended]:
        """Run ``entry`` to its end: send ``input`` (then end it), collect every output byte."""

        async def run() -> tuple[bytes, Ended]:
            output = bytearray()
            async with await self.box.start(deployment, entry, args, kwargs) as stream:
                if input is not None:
                    await stream.send(input)
                    await stream.close_input()
                async for chunk in stream:
                    output += chunk
            return bytes(output), _ended(stream)

        return self._runner.run(run())

    def stream(self, deployment: Deployment, session_id: str) -> Iterator[bytes]:
        """The session's output as it comes (attach; the session goes on if we stop reading).
        When it is over, ``last_ended`` says how the session ended."""
        stream: SessionStream = self._runner.run(self.box.attach(deployment, session_id))
        try:
            while (chunk := self._runner.run(stream.receive())) is not None:
                yield chunk
            self.last_ended = stream.ended
        finally:
            self._runner.run(stream.close())


def _ended(stream: SessionStream) -> Ended:
    if stream.ended is None:
        raise BentoError(f"session {stream.session_id} stopped without saying how it ended")
    return stream.ended
