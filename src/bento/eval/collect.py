"""Collecting traces on the testnet: every site, every visit, every condition, resumable.

For each visit the watched link is captured (:mod:`bento.eval.sniff`) while the victim's
client (:mod:`bento.eval.victim`) loads a corpus site, either itself through Tor like a
browser (condition ``tor``) or through Browser on an exit box with a given padding
(``browser-0mb``, ``browser-1mb``, ``browser-7mb``), or through Browser without padding
inside link cover (``browser-cover``: :data:`COVER`, a fixed rate in a fixed window that
outlasts the heaviest corpus page, so every visit shows the same rate for as long). The
capture becomes the visit's cell sequence (:mod:`bento.eval.capture`), appended to the
condition's trace file at once, so a stopped collection resumes at the first visit it lacks.

Browser is deployed before its first captured visit: the upload of the function is not in
the traces (the paper's attacker saw it; it is the same for every site).

Sites are visited round-robin (visit 0 of every site, then visit 1, ...), as crawls for
fingerprinting datasets do, so that slow drift of the network is spread over all sites.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Callable, Sequence
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

MB = 1_000_000
# Link cover: 1000 cells/s each way (514 KB/s on the link) carries a 5 MiB page, the corpus's
# heaviest, in about 11 s; the 20 s window holds it with the box's fetch (docs/benchmarks.md).
COVER = Cover(rate=1000, burst=10, lead=1.0, duration=20.0, tail=1.0)
PADDING = {"browser-0mb": 0, "browser-1mb": 1 * MB, "browser-7mb": 7 * MB, "browser-cover": 0}
CONDITIONS = ("tor", *PADDING)
VISIT_TIMEOUT = 300.0


async def collect(
    testnet: Testnet,
    dataset: Path,
    conditions: Sequence[str],
    sites: int,
    visits: int,
    *,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, int]:
    """Collect what is missing; returns how many traces each condition now has."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise BentoError(
            f"unknown condition {unknown[0]!r}",
            fix=f"choose from {', '.join(CONDITIONS)}",
        )
    corpus, port = testnet.corpus, testnet.corpus_port
    if corpus is None or port is None:
        raise BentoError("this testnet serves no corpus", fix="start it with corpus sites (the default)")
    if sites > len(corpus.sites):
        raise BentoError(f"the testnet's corpus has {len(corpus.sites)} sites, not {sites}")
    boxes = [n for n in testnet.state.boxes if n.bento_onion]
    if any(c in PADDING for c in conditions) and not boxes:
        raise BentoError(
            "Browser's conditions need a Bento box on the testnet", fix="start it with --bento-boxes 1"
        )
    tor = await victim.start(testnet, dataset / "victim-tor")
    socks = f"{tor.socks[0]}:{tor.socks[1]}"
    try:  # a first, unrecorded visit builds a circuit, which shows the guard
        await browserlike.fetch(corpus.sites[0].url(port), socks, isolation="warm-up")
        guard = await victim.guard(tor, testnet)
    except BaseException:
        await tor.stop()
        raise
    assert guard.or_port is not None
    keyring = Keyring(dataset / "keyring.json")
    counts = {}
    try:
        for condition in conditions:
            have = {(t.site, t.visit) for t in traces.load(dataset, condition)}
            box = Box(boxes[0].bento_onion, socks=socks) if condition in PADDING else None  # type: ignore[arg-type]
            try:
                if box is not None:
                    await browser.deployment(box, keyring)
                for visit in range(visits):
                    for site in corpus.sites[:sites]:
                        if (site.index, visit) in have:
                            continue
                        say(f"{condition}: visit {visit + 1} of {visits}, {site.name}")
                        link = (tor.process.pid, guard.or_port)
                        records = await _visit(dataset, condition, site.url(port), socks, box, keyring, link)
                        trace = Trace.from_records(site.index, visit, condition, records, site.name)
                        traces.append(dataset, trace)
                        have.add((site.index, visit))
            finally:
                if box is not None:
                    await box.__aexit__(None, None, None)
            counts[condition] = len(have)
    finally:
        await tor.stop()
    return counts


async def _visit(
    dataset: Path,
    condition: str,
    url: str,
    socks: str,
    box: Box | None,
    keyring: Keyring,
    link: tuple[int, int],
) -> list[tuple[float, int, int]]:
    pid, guard_port = link
    pcap = dataset / "capture.pcap"
    ports = await asyncio.to_thread(victim.link_ports, pid, guard_port)
    if not ports:
        raise BentoError("the victim's tor has no connection to its guard", fix="see victim-tor/notice.log")
    either = " or ".join(f"tcp port {p}" for p in sorted(ports))
    watched = f"host 127.0.0.1 and tcp port {guard_port} and ({either})"
    async with Sniffer(pcap, watched), asyncio.timeout(VISIT_TIMEOUT):
        if box is None:
            await browserlike.fetch(url, socks, isolation=secrets.token_hex(8))
        else:
            with tempfile.TemporaryDirectory(prefix="bento-eval-") as out:
                cover = COVER if condition == "browser-cover" else None
                options = browser.Options(pad=PADDING[condition], cover=cover)
                await browser.browse(box, keyring, url, Path(out) / "page", options)
    records = await asyncio.to_thread(capture.tls_records, pcap, "127.0.0.1", guard_port)
    if not records:
        raise BentoError(f"the capture of {url} is empty", fix="check that dumpcap may capture on lo (root)")
    return records
