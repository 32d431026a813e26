"""Admission is exact: at the box's cap a session is refused before it starts, or it runs.

The sandbox host keeps sandboxes warm in its pool, and they hold instance slots; a
session the server admitted must never then fail for want of one. The box here is the
real one in process (API, registry, bubblewrap sandboxes), with its pool kept warm as the
daemon keeps it, and a small cap, filled at once and then one more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from localbox import LocalBox, box_in_its_own_task

CAP = 6
POOL = 2

SOURCE = """
import time
from bento.runtime import api

def hold():
    api.send("running")
    time.sleep(120)
"""


@pytest.fixture
async def warm_box() -> AsyncIterator[LocalBox]:
    """A box of ``CAP`` instances whose pool holds ``POOL`` warm sandboxes, as the daemon runs it."""
    async with box_in_its_own_task(warm=POOL, policy={"instances_total": CAP}) as local:
        yield local


@pytest.mark.timeout(120)
async def test_a_box_filled_at_once_runs_every_session_it_admits_and_refuses_the_next(
    warm_box: LocalBox,
) -> None:
    box = warm_box
    # Two functions, as the burst had: the cap is the box's, not a function's.
    first = await box.upload(SOURCE, needs={"instances": CAP})
    second = await box.upload(SOURCE, needs={"instances": CAP})
    assert len(box.registry.sandbox.pool) == POOL, "the pool is warm and holds slots of the cap"

    async def open_session(index: int) -> tuple[int, dict[str, str]]:
        function = (first, second)[index % 2]
        response = await box.http.post(
            f"/v1/functions/{function.function_id}/sessions",
            json={"entry": "hold"},
            headers=function.invoke_auth,
        )
        return response.status_code, response.json()

    # Two first, one after the other: each takes a warm sandbox, and the pool starts
    # refilling; the rest arrive at once while it does (as a burst over Tor arrives).
    answers = []
    for index in range(2):
        answers.append(await open_session(index))
        async with asyncio.timeout(30):
            await box.registry.sessions[answers[-1][1]["session_id"]].started.wait()
    answers += await asyncio.gather(*(open_session(i) for i in range(2, CAP + 1)))

    admitted = [body["session_id"] for status, body in answers if status == 201]
    refused = [body for status, body in answers if status != 201]
    assert len(admitted) == CAP, answers
    assert [(r["code"], bool(r["fix"])) for r in refused] == [("box-full", True)], refused
    for session_id in admitted:
        session = box.registry.sessions[session_id]
        async with asyncio.timeout(30):
            await session.started.wait()
        assert not session.ended, f"admitted, then: {session.reason}"
        assert session.instance is not None and session.instance.process.returncode is None
    # And one more still finds the box full, while they run.
    status, body = await open_session(0)
    assert (status, body["code"]) == (503, "box-full")
