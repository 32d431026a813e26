"""The Bento client: find boxes, deploy functions, talk to them, all over Tor.

A box is reached at its onion address through a Tor SOCKS port; any ``httpx`` transport
will do instead, such as the app of an in-process box (here, with a real sandbox):

>>> import asyncio
>>> from bento.protocol.manifest import Manifest
>>> from bento.server.local import local_box
>>> HELLO = b'''
... from bento.runtime import api
... def main(name):
...     print("greeting", name)          # a log line: apart from the output
...     api.send(f"hello {name}")
...     return len(name)
... '''
>>> async def hello() -> None:
...     async with local_box() as box:   # or: Box(onion, socks="127.0.0.1:9050")
...         deployed = await box.deploy(HELLO, Manifest(name="hello"))
...         async with await box.start(deployed, "main", ["world"]) as stream:
...             async for chunk in stream:
...                 print(chunk.decode())
...         print(stream.ended.result, [log.text for log in stream.logs])
...         try:
...             await box.start(deployed, "nope")
...         except NotFound as refused:
...             print(refused.code, refused.status)
>>> asyncio.run(hello())
hello world
5 ['greeting world\\n']
unknown-entry 404

``Box.start`` invokes and streams in one round trip; ``Box.attach`` resumes a session
later (from another process too: keep ``stream.session_id`` and its right, which the
deployment holds in ``session_rights``: a session belongs to whoever opened it). A stream whose connection
drops re-attaches by itself (``Retry``) and delivers every output byte once. Errors are
``bento.errors``: ``BentoError`` and its leaves, which keep the box's code and status.
"""

from typing import TYPE_CHECKING, Any

from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import Retry, SessionStream
from bento.errors import BentoError, Busy, ConnectionLost, NotFound, Refused, TransportError

if TYPE_CHECKING:
    from bento.client.discovery import BoxInfo, discover


def __getattr__(name: str) -> Any:
    """Discovery reads the consensus with Stem, which only finding boxes needs: it is
    imported when first named, so that talking to a known box (``bento invoke``) starts fast."""
    if name in ("BoxInfo", "discover"):
        from bento.client import discovery

        return getattr(discovery, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BentoError",
    "Box",
    "BoxInfo",
    "Busy",
    "ConnectionLost",
    "Deployment",
    "Keyring",
    "NotFound",
    "Refused",
    "Retry",
    "SessionStream",
    "TransportError",
    "discover",
]
