"""Libraries that open their own sockets, and the box's offered packages, on a testnet box."""

from __future__ import annotations

import pytest
from support import TIMEOUT, run

from bento.client.box import Box
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs, SyscallProfile
from bento.testnet.site import LocalSite

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]

SOURCE = """
import asyncio

def streams(host, port):
    async def fetch():
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
        writer.write(b"GET /page HTTP/1.0\\r\\nHost: site\\r\\n\\r\\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        return data.split(b"\\r\\n\\r\\n", 1)[1].decode()
    return asyncio.run(fetch())

def offered_httpx(url):
    import httpx, bento.client   # offered by the box (its descriptor lists them)

    async def fetch():
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.get(url)
            return [response.status_code, response.text, httpx.__file__]
    return asyncio.run(fetch())
"""
NEEDS = Needs(network=True, syscall_profiles=[SyscallProfile.COMPUTE, SyscallProfile.NETWORK], memory_mb=256)


async def test_asyncio_streams_and_offered_httpx_go_through_the_broker(box: Box) -> None:
    descriptor = await box.descriptor()
    offered = {p.name.lower() for p in descriptor.runtime.packages}
    assert {"bento", "httpx", "pydantic"} <= offered
    deployment = await box.deploy(SOURCE.encode(), Manifest(name="network", needs=NEEDS))
    async with LocalSite({"/page": b"a page for sockets of their own"}) as site:
        _, ended = await run(box, deployment, "streams", "127.0.0.1", site.port)
        assert ended.state is SessionState.COMPLETED, ended.reason
        assert ended.result == "a page for sockets of their own"
        _, ended = await run(box, deployment, "offered_httpx", f"{site.url}page")
        assert ended.state is SessionState.COMPLETED, ended.reason
    status, text, location = ended.result
    assert (status, text) == (200, "a page for sockets of their own")
    assert location.startswith("/opt/bento/site/httpx/")
    assert ended.usage.network_granted >= 1
    await box.shutdown(deployment)
