"""The link capture holds every packet sent while it is open, from its first to its last.

dumpcap announces itself before its filter is live and writes its file in batches; a capture
that trusted either lost the start and the end of pages (the demo once saw 91 KB of 888 KB).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from bento.eval import capture
from bento.eval.sniff import Sniffer

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("dumpcap") is None,
    reason="capturing on lo needs root and Debian's dumpcap",
)
RECORD = bytes([23, 3, 3, 0x02, 0x13]) + bytes(531)  # one TLS application-data record of a cell


async def test_every_record_sent_while_capturing_is_in_the_file(tmp_path: Path) -> None:
    received = bytearray()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pcap = tmp_path / "link.pcap"
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        async with Sniffer(pcap, f"tcp port {port}"):
            # At once, in a burst, and right up to the end: nothing here waits for dumpcap.
            for _ in range(400):
                writer.write(RECORD)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
    records = capture.tls_records(pcap, "127.0.0.1", port)
    assert [length for _, direction, length in records] == [531] * 400
    assert all(direction == 1 for _, direction, _ in records)
