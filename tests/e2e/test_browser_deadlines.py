"""Browser's delivery schedule end to end: ``bento browse --deliver-at`` on a box of the
testnet, over Tor. The page arrives in the window of one of the deadlines asked for, filled
to that window's size; the windows' exact timing is unit-tested (test_browser_timing.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import TIMEOUT, bento_cli

from bento.functions.browser import timing
from bento.testnet import Testnet
from browser_site import finish, sample_site, serve

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]


async def test_the_page_arrives_in_the_window_of_a_deadline_asked_for(
    testnet: Testnet, tmp_path: Path
) -> None:
    first, third = sample_site()
    schedule = timing.Schedule(deadlines=(4.0, 8.0), rate=100_000)  # windows 2-4 s (200 KB), 4-8 s (400 KB)
    async with serve(first, third):
        finish(first, third)
        code, stdout, stderr = await bento_cli(
            testnet, tmp_path / "keyring.json", "browse", f"{first.origin}/", "--box", "exit0",
            "--deliver-at", "4,8", "--deliver-rate", "100KB/s", "--out", str(tmp_path / "page"), "--json",
        )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(stdout)
    deadline = report["deadline"]
    assert deadline in schedule.deadlines and report["deadlines_missed"] == schedule.deadlines.index(deadline)
    # The transfer fills its window exactly: the page's size is not on the link, only the window's.
    assert report["received_bytes"] == schedule.size(deadline) and report["padding_bytes"] > 0
    # Nothing arrived before the window opened (the box counts from its receiving the request,
    # after the client started its clock), and the page was whole and unpacked.
    assert report["seconds_to_page_bytes"] >= schedule.window(deadline)[0]
    assert report["seconds_to_last_byte"] >= report["seconds_to_page_bytes"]
    assert b"<h1" in Path(report["main"]).read_bytes() and report["resources"] > 10
    # A schedule Browser cannot keep is refused before anything is sent.
    code, _, stderr = await bento_cli(
        testnet,
        tmp_path / "keyring.json",
        "browse",
        f"{first.origin}/",
        "--box",
        "exit0",
        "--deliver-at",
        "8,4",
    )
    assert code != 0 and "the deadlines must increase" in stderr
