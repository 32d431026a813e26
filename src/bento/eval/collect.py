"""Collecting traces on the testnet: every site, every visit, every condition, resumable.

For each visit the watched link is captured (:mod:`bento.eval.sniff`) while a victim's
client (:mod:`bento.eval.victim`) loads a corpus site, either itself through Tor like a
browser (condition ``tor``) or through Browser on an exit box with a given padding
(``browser-0mb``, ``browser-1mb``, ``browser-7mb``), or through Browser without padding
inside link cover (``browser-cover``: :data:`COVER`, a fixed rate in a fixed window that
outlasts the heaviest corpus page, so every visit shows the same rate for as long). The
capture becomes the visit's cell sequence (:mod:`bento.eval.capture`), appended to the
condition's trace file at once, so a stopped collection resumes at the first visit it lacks.

Browser is deployed before the first captured visit: the upload of the function is not in
the traces (the paper's attacker saw it; it is the same for every site).

The order is round-robin, as crawls for fingerprinting datasets are: visit 0 of every
site under every condition, then visit 1, and so on. Slow drift of the network is spread
over all sites and conditions, and a collection stopped half-way leaves every condition
with the same visits, so its traces can already be attacked.

Visits are latency-bound (a page load waits on round trips, not on the processor), so
``parallel`` victims can visit at once. Each is a tor of its own with its own guard link,
and each capture records only its own victim's link (by its ports), so a visit's trace
holds no cell of another: to the attacker the others are other users of the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bento.client.box import Box
from bento.client.cover import Cover
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.eval import browserlike, capture, traces, victim
from bento.eval.sniff import Sniffer
from bento.eval.traces import Trace
from bento.functions.browser import client as browser
from bento.testnet import Testnet
from bento.testnet.corpus import Site

MB = 1_000_000
# Link cover: 1000 cells/s each way (514 KB/s on the link) carries a 5 MiB page, the corpus's
# heaviest, in about 11 s, so a 20 s window holds it with the box's fetch on a quiet host; on a
# loaded one a heavy page outlasts the window, and its length shows (docs/benchmarks.md).
COVER = Cover(rate=1000, burst=10, lead=1.0, duration=20.0, tail=1.0)
PADDING = {"browser-0mb": 0, "browser-1mb": 1 * MB, "browser-7mb": 7 * MB, "browser-cover": 0}
CONDITIONS = ("tor", *PADDING)
VISIT_TIMEOUT = 300.0
ATTEMPTS = 2  # a visit that fails twice is left for the next run
GIVE_UP_AFTER = 10  # failed attempts in a row that stop a victim: something is broken


@dataclass(frozen=True)
class Visit:
    visit: int
    condition: str
    site: Site


@dataclass
class Outcome:
    """What a collection run did: traces per condition now, and the visits it could not make."""

    counts: dict[str, int]
    failed: list[str] = field(default_factory=list)


async def collect(
    testnet: Testnet,
    dataset: Path,
    conditions: Sequence[str],
    sites: int,
    visits: int,
    *,
    parallel: int = 1,
    planned: Callable[[int], None] = lambda _: None,
    say: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Collect what is missing, ``parallel`` victims at a time.

    ``planned`` is told how many visits are missing; ``say`` is told once of each of them,
    when it is collected or given up on.
    """
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise BentoError(
            f"unknown condition {unknown[0]!r}",
            fix=f"choose from {', '.join(CONDITIONS)}",
        )
    if not 1 <= parallel <= 16:
        raise BentoError(f"--parallel must be between 1 and 16, not {parallel}")
    corpus, port = testnet.corpus, testnet.corpus_port
    if corpus is None or port is None:
        raise BentoError("this testnet serves no corpus", fix="start it with corpus sites (the default)")
    if sites > len(corpus.sites):
        raise BentoError(f"the testnet's corpus has {len(corpus.sites)} sites, not {sites}")
    boxes = [n.bento_onion for n in testnet.state.boxes if n.bento_onion]
    if any(c in PADDING for c in conditions) and not boxes:
        raise BentoError(
            "Browser's conditions need a Bento box on the testnet", fix="start it with --bento-boxes 1"
        )
    have = {c: {(t.site, t.visit) for t in traces.load(dataset, c)} for c in conditions}
    queue: asyncio.Queue[Visit] = asyncio.Queue()
    for number in range(visits):
        for condition in conditions:
            for site in corpus.sites[:sites]:
                if (site.index, number) not in have[condition]:
                    queue.put_nowait(Visit(number, condition, site))
    outcome = Outcome(counts={})
    planned(queue.qsize())
    if not queue.empty():
        keyring = Keyring(dataset / "keyring.json")
        browser_box = boxes[0] if boxes else None
        workers = min(parallel, queue.qsize())
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(workers):
                    worker = _Worker(n, testnet, dataset, keyring, browser_box, port, outcome, say)
                    group.create_task(worker.run(queue, have))
        except ExceptionGroup as failure:  # a victim that cannot start stops the run: say why
            raise failure.exceptions[0] from failure
    outcome.counts = {c: len(have[c]) for c in conditions}
    return outcome


@dataclass
class _Worker:
    """One victim: its own tor, guard link and capture file, taking visits from the queue."""

    number: int
    testnet: Testnet
    dataset: Path
    keyring: Keyring
    browser_box: str | None
    port: int
    outcome: Outcome
    say: Callable[[str], None]

    async def run(self, queue: asyncio.Queue[Visit], have: dict[str, set[tuple[int, int]]]) -> None:
        corpus = self.testnet.corpus
        assert corpus is not None
        tor = await victim.start(self.testnet, self.dataset / f"victim-tor-{self.number}")
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(tor.stop)
            socks = f"{tor.socks[0]}:{tor.socks[1]}"
            # A first, unrecorded visit builds circuits and opens the links to the network.
            # A fresh tor's first circuits fail now and then on a busy host (SOCKS "TTL
            # expired"): the warm-up is not a measurement, so it is tried a few times.
            for attempt in range(1, 4):
                try:
                    await browserlike.fetch(
                        corpus.sites[0].url(self.port), socks, isolation=f"warm-up-{attempt}"
                    )
                    break
                except OSError:
                    if attempt == 3:
                        raise
            box = None
            if self.browser_box is not None:
                box = await stack.enter_async_context(Box(self.browser_box, socks=socks))
                await _live_browser(box, self.keyring)
            relays = sorted(n.or_port for n in self.testnet.nodes if n.is_relay and n.or_port)
            link = (tor.process.pid, relays)
            failures_in_a_row = 0
            while not queue.empty():
                item = queue.get_nowait()
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        records = await self._visit(item, socks, box, link)
                    except Exception as exc:  # one visit's failure, whatever it is
                        # (a library's own error that escaped its wrapper included), is that
                        # visit's: it is reported, and hours of collection go on; a run where
                        # visits keep failing stops instead of burning through the queue.
                        failures_in_a_row += 1
                        if failures_in_a_row >= GIVE_UP_AFTER:
                            raise BentoError(
                                f"{failures_in_a_row} visits in a row failed; the last: {exc!r:.300}",
                                fix="check the testnet (bento testnet status) and the victims' logs",
                            ) from exc
                        if attempt == ATTEMPTS:
                            what = f"{item.condition} {item.site.name} visit {item.visit}"
                            self.outcome.failed.append(f"{what}: {exc!r:.300}")
                            self.say(f"{what}: gave up after {ATTEMPTS} attempts")
                        continue
                    trace = Trace.from_records(
                        item.site.index, item.visit, item.condition, records, item.site.name
                    )
                    traces.append(self.dataset, trace)
                    failures_in_a_row = 0
                    have[item.condition].add((item.site.index, item.visit))
                    self.say(f"{item.condition}: visit {item.visit + 1}, {item.site.name}")
                    break

    async def _visit(
        self, item: Visit, socks: str, box: Box | None, link: tuple[int, list[int]]
    ) -> list[tuple[float, int, int]]:
        pid, relays = link
        pcap = self.dataset / f"capture-{self.number}.pcap"
        url = item.site.url(self.port)
        ports = await asyncio.to_thread(victim.links, pid, relays)
        if not ports:
            raise BentoError(
                "the victim's tor has no connection to a relay", fix="see victim-tor-*/notice.log"
            )
        either = " or ".join(f"tcp port {p}" for p in sorted(ports))
        watched = f"host 127.0.0.1 and ({either})"
        async with Sniffer(pcap, watched), asyncio.timeout(VISIT_TIMEOUT):
            if item.condition == "tor":
                await browserlike.fetch(url, socks, isolation=secrets.token_hex(8))
            else:
                if box is None:
                    raise BentoError(f"{item.condition} needs a Bento box")
                with tempfile.TemporaryDirectory(prefix="bento-eval-") as out:
                    cover = COVER if item.condition == "browser-cover" else None
                    options = browser.Options(pad=PADDING[item.condition], cover=cover)
                    await browser.browse(box, self.keyring, url, Path(out) / "page", options)
        # A connection opened during the visit was not in the capture filter: its cells
        # are missing, so the visit is made again (by then the connection exists).
        if opened := await asyncio.to_thread(victim.links, pid, relays) - ports:
            raise BentoError(f"the victim opened {len(opened)} new link(s) during the visit")
        records: list[tuple[float, int, int]] = []
        for relay in relays:
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
