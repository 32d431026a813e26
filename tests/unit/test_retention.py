"""What ended sessions keep is bounded: output by bytes, sessions by count; the oldest goes first.

A client that comes back for what was dropped gets 410 with a code that says why, never a
silent gap in its stream.
"""

from __future__ import annotations

from typing import Any

import pytest
from localbox import LocalBox

from bento.errors import Refused
from bento.protocol.errors import ErrorCode

SPEW = "from bento.runtime import api\n\ndef spew(n):\n    api.send(bytes(n))\n    return n\n"


async def _ended(box: LocalBox, function: Any, n: int) -> str:
    session_id = await box.invoke(function, "spew", n)
    info = await box.wait_state(function, session_id)
    assert info["state"] == "completed", info
    return session_id


@pytest.mark.parametrize("box_limits", [{"retained_output_bytes": 100_000}])
async def test_the_oldest_output_is_dropped_past_the_total_cap(box: LocalBox) -> None:
    function = await box.upload(SPEW)
    first = await _ended(box, function, 60_000)
    assert (await box.session_info(function, first))["buffered"] == 60_000
    second = await _ended(box, function, 60_000)  # 120 000 bytes held: over the cap

    dropped, kept = await box.session_info(function, first), await box.session_info(function, second)
    assert (dropped["output_expired"], dropped["buffered"], dropped["state"]) == (True, 0, "completed")
    assert (kept["output_expired"], kept["buffered"]) == (False, 60_000)
    assert box.registry.retention.output_bytes <= 100_000

    with pytest.raises(Refused) as refused:
        async with await box.client.attach(function, first) as stream:
            async for _ in stream:
                pass
    assert (refused.value.code, refused.value.status) == (ErrorCode.OUTPUT_EXPIRED, 410)

    received = bytearray()
    async with await box.client.attach(function, second) as stream:
        async for chunk in stream:
            received += chunk
    assert len(received) == 60_000 and stream.ended is not None and stream.ended.result == 60_000


@pytest.mark.parametrize("box_limits", [{"retained_sessions": 2}])
async def test_past_the_count_cap_the_oldest_session_is_forgotten_with_a_410(box: LocalBox) -> None:
    function = await box.upload(SPEW)
    sessions = [await _ended(box, function, 10) for _ in range(3)]
    gone = await box.http.get(f"/v1/sessions/{sessions[0]}", headers=function.invoke_auth)
    assert (gone.status_code, gone.json()["code"]) == (410, "session-expired"), gone.text
    assert "fix" in gone.json()
    for kept in sessions[1:]:
        assert (await box.session_info(function, kept))["state"] == "completed"
    never = await box.http.get("/v1/sessions/never-was", headers=function.invoke_auth)
    assert never.status_code == 404, "only a session that existed is 'gone'"
