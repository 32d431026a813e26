"""One watched victim on the testnet, making captured visits: the unit of a collection.

For each visit the watched link is captured (:mod:`bento.eval.sniff`) while the victim's
client (:mod:`bento.eval.victim`) loads a corpus site, either itself through Tor like a
browser (condition ``tor``) or through Browser on an exit box with the options of
:data:`BROWSER` (``browser-0mb``, ``browser-1mb``, ``browser-7mb``; ``browser-cover``: no
padding inside link cover, :data:`COVER`, a fixed rate in a fixed window that outlasts the
heaviest corpus page; ``browser-deadlines``: no other padding, the page delivered in the
window of a deadline of :data:`DEADLINES`, at a constant rate, so that its time hides too;
``browser-deadlines-20``: the same at 20 or 40 s, :data:`DEADLINES_20`).
A new condition of Browser (a defense) is one more entry there. The
capture becomes the visit's TLS records (:mod:`bento.eval.capture`); :mod:`bento.eval.rounds`
puts visits together into rounds and the dataset.

Browser is deployed before the first captured visit: the upload of the function is not in
the traces (the paper's attacker saw it; it is the same for every site).

Visits are latency-bound (a page load waits on round trips, not on the processor), so
several victims can visit at once. Each is a tor of its own with its own guard link, and
each capture records only its own victim's link (by its ports), so a visit's trace holds
no cell of another: to the attacker the others are other users of the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from pathlib import Path
from types import TracebackType

from bento.client.box import Box
from bento.client.cover import Cover
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.eval import browserlike, capture, victim
from bento.eval.sniff import Sniffer
from bento.functions.browser import client as browser
from bento.testnet import Testnet
from bento.testnet.corpus import Site

MB = 1_000_000
# Link cover: 1000 cells/s each way (514 KB/s on the link) carries a 5 MiB page, the corpus's
# heaviest, in about 11 s, so a 20 s window holds it with the box's fetch on a quiet host; on a
# loaded one a heavy page outlasts the window, and its length shows (docs/benchmarks.md).
COVER = Cover(rate=1000, burst=10, lead=1.0, duration=20.0, tail=1.0)
# The delivery schedule: windows of 2.5-5, 5-10, 10-20 and 20-40 s after the request, at 500 KB/s
# (1.25, 2.5, 5 and 10 MB): the corpus's pages fetch in 1-4 s at the box and weigh up to 5 MiB.
DEADLINES = browser.Timing(deadlines=(5.0, 10.0, 20.0, 40.0), rate=500_000)
# One class for all but the heaviest pages (a 10-20 s window holds 5 MB): what is left to an
# attacker is next to nothing (the bound is 1.2% for 100 sites, chance 1%), at 20 s a page.
DEADLINES_20 = browser.Timing(deadlines=(20.0, 40.0), rate=500_000)
PLAIN = "tor"  # the victim loads the page itself through Tor, as a browser does
# Every condition through Browser, by the options of its request: a defense is one more entry.
BROWSER = {
    "browser-0mb": browser.Options(pad=0),
    "browser-1mb": browser.Options(pad=1 * MB),
    "browser-7mb": browser.Options(pad=7 * MB),
    "browser-cover": browser.Options(pad=0, cover=COVER),
    "browser-deadlines": browser.Options(pad=0, timing=DEADLINES),
    "browser-deadlines-20": browser.Options(pad=0, timing=DEADLINES_20),
}
CONDITIONS = (PLAIN, *BROWSER)
VISIT_TIMEOUT = 300.0

Records = list[tuple[float, int, int]]  # (time, direction, TLS record length), in time order


def check_conditions(conditions: list[str]) -> None:
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise BentoError(f"unknown condition {unknown[0]!r}", fix=f"choose from {', '.join(CONDITIONS)}")


class Victim:
    """``async with Victim(testnet, number, work):`` a watched tor of its own, warmed up,
    with Browser deployed on the testnet's first box; :meth:`visit` captures one visit."""

    def __init__(self, testnet: Testnet, number: int, work: Path, keyring: Keyring) -> None:
        corpus, port = testnet.corpus, testnet.corpus_port
        if corpus is None or port is None:
            raise BentoError("this testnet serves no corpus", fix="start it with corpus sites (the default)")
        self.testnet, self.number, self.work, self.keyring = testnet, number, work, keyring
        self.port = port
        self._first_site = corpus.sites[0]
        self._stack = contextlib.AsyncExitStack()
        self._box: Box | None = None
        self._pid = 0
        self._socks = ""
        self._relays = sorted(n.or_port for n in testnet.nodes if n.is_relay and n.or_port)

    async def __aenter__(self) -> Victim:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        tor = await victim.start(self.testnet, self.work / f"victim-tor-{self.number}")
        self._stack.push_async_callback(tor.stop)
        self._pid, self._socks = tor.process.pid, f"{tor.socks[0]}:{tor.socks[1]}"
        # A first, unrecorded visit builds circuits and opens the links to the network.
        # A fresh tor's first circuits fail now and then on a busy host (SOCKS "TTL
        # expired"): the warm-up is not a measurement, so it is tried a few times.
        for attempt in range(1, 4):
            try:
                url = self._first_site.url(self.port)
                await browserlike.fetch(url, self._socks, isolation=f"warm-up-{attempt}")
                break
            except OSError:
                if attempt == 3:
                    raise
        boxes = [n.bento_onion for n in self.testnet.state.boxes if n.bento_onion]
        if boxes:
            self._box = await self._stack.enter_async_context(Box(boxes[0], socks=self._socks))
            await _live_browser(self._box, self.keyring)

    async def visit(self, condition: str, site: Site) -> Records:
        """Load ``site`` under ``condition`` while its link is captured; the TLS records seen."""
        pcap = self.work / f"capture-{self.number}.pcap"
        url = site.url(self.port)
        ports = await asyncio.to_thread(victim.links, self._pid, self._relays)
        if not ports:
            raise BentoError(
                "the victim's tor has no connection to a relay", fix="see victim-tor-*/notice.log"
            )
        either = " or ".join(f"tcp port {p}" for p in sorted(ports))
        async with Sniffer(pcap, f"host 127.0.0.1 and ({either})"), asyncio.timeout(VISIT_TIMEOUT):
            if condition == PLAIN:
                await browserlike.fetch(url, self._socks, isolation=secrets.token_hex(8))
            else:
                if self._box is None:
                    raise BentoError(
                        f"{condition} needs a Bento box on the testnet", fix="start it with --bento-boxes 1"
                    )
                with tempfile.TemporaryDirectory(prefix="bento-eval-") as out:
                    await browser.browse(self._box, self.keyring, url, Path(out) / "page", BROWSER[condition])
        # A connection opened during the visit was not in the capture filter: its cells
        # are missing, so the visit is made again (by then the connection exists).
        if opened := await asyncio.to_thread(victim.links, self._pid, self._relays) - ports:
            raise BentoError(f"the victim opened {len(opened)} new link(s) during the visit")
        records: Records = []
        for relay in self._relays:
            records += await asyncio.to_thread(capture.tls_records, pcap, "127.0.0.1", relay)
        records.sort()
        if not records:
            raise BentoError(
                f"the capture of {url} is empty", fix="check that dumpcap may capture on lo (root)"
            )
        return records


async def _live_browser(box: Box, keyring: Keyring) -> None:
    """Make sure Browser is deployed on ``box`` now, before any capture: a box that
    restarted has forgotten it, and redeploying inside a visit would put the upload in
    that visit's trace."""
    function, deployed = await browser.deployment(box, keyring)
    if deployed:
        return
    try:
        await box.sessions(function)
    except BentoError:
        keyring.forget(function.function_id, how="replaced")
        await browser.deployment(box, keyring, fresh=True)
