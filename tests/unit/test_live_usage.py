"""``bento sessions`` shows what a running session uses now, not 0 until it ends."""

from __future__ import annotations

import time

from localbox import LocalBox

BURN = """
import time
from bento.runtime import api

def burn(seconds, mib):
    held = bytearray(mib << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    api.send("busy\\n")
    api.recv()
    return len(held)
"""


async def test_a_running_session_reports_its_cpu_and_memory_so_far(box: LocalBox) -> None:
    function = await box.upload(BURN, needs={"memory_mb": 128})
    started = time.monotonic()
    stream = await box.client.start(function, "burn", [0.5, 40])
    async with stream:
        first = await anext(aiter(stream))
        assert first.startswith(b"busy")
        listing = await box.client.sessions(function)
        (running,) = listing.sessions
        assert running.state.value == "running"
        assert 0.45 <= running.usage.cpu_seconds <= time.monotonic() - started + 0.1
        assert running.usage.peak_memory_bytes >= 40 << 20
        await stream.close_input()
        async for _ in stream:
            pass
    assert stream.ended is not None and stream.ended.state.value == "completed"
