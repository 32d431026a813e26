"""The demo's tour on the session's testnet: `bento demo` runs the same acts on a testnet of
its own, so a change that breaks an act fails here."""

from __future__ import annotations

import pytest
from support import TIMEOUT

from bento.cli import demo
from bento.cli.demo_browser import PAD, browser_act, can_capture
from bento.cli.output import console
from bento.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]


async def test_the_demo_tour_runs_every_act(testnet: Testnet) -> None:
    with console.capture() as captured:
        act = await demo.tour(testnet)
    text = captured.get()
    print(text)  # shown when it fails
    assert "BENTO BOXES RUN CODE ON RELAYS" in text  # the function answered over Tor
    assert "plain Tor" in text and "Browser, 1 MB padding" in text
    # Browser: the header, the archive and the padding fill a multiple of the padding size.
    assert act.received % PAD == 0 and act.received >= PAD
    assert act.resources_browser >= act.resources_plain > 0
    assert act.captured is can_capture()
    if act.captured:
        # The links carried (in TLS records) at least what each fetch brought: the capture
        # holds every packet from its start to its end (bento.eval.sniff marks both).
        assert act.plain.down >= act.fetched_plain and act.plain.up > 0
        assert act.browser.down >= act.received and act.browser.up > 0
        assert "down" in text and act.browser.timeline()[1].strip()
        # Without a capture, the act counts the bytes read through SOCKS: checked here with
        # a second Browser act only where the tour itself did not already run without one.
        act = await browser_act(testnet, lambda _: None, capture_link=False)
        assert not act.captured and act.plain.records == [] and act.browser.records == []
        assert act.received % PAD == 0
    assert act.browser.down == act.received and act.plain.down == act.fetched_plain > 0
