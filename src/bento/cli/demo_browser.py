"""The demo's Browser act: one page, fetched by plain Tor and by Browser, as the user's link shows it.

Run as root with Debian's ``dumpcap``, the act starts a user's tor of its own
(:mod:`bento.eval.victim`) and records its links to the relays while each fetch runs
(:mod:`bento.eval.sniff`, :mod:`bento.eval.capture`): the bytes of the TLS records on
them, each way, which is what a watcher of the user's link sees. Otherwise (no root, no
dumpcap) it says so and counts the bytes the client read from its SOCKS connection.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.eval import browserlike, capture, victim
from bento.eval.sniff import Sniffer
from bento.functions.browser import client as browser
from bento.testnet import Testnet
from bento.tor.client_tor import ClientTor

PAD = 1_000_000  # the paper's nominal 1 MB
PAGE_BYTES = 1_000_000  # a page of about this weight is shown
ACT_TIMEOUT = 300.0
BARS = " ▁▂▃▄▅▆▇█"
T = TypeVar("T")


@dataclass
class Seen:
    """One fetch as the user's link showed it."""

    seconds: float
    up: int  # bytes from the user
    down: int  # bytes to the user
    records: list[tuple[float, int, int]]  # (time, +1 up / -1 down, length); empty if not captured
    dropped: int = 0  # packets the capture lost (on a busy machine): the bytes are then a lower bound

    def timeline(self, width: int = 48) -> tuple[str, str]:
        """Bytes up and down over the fetch's time, as two rows of bars."""
        if not self.records:
            return "", ""
        start, end = self.records[0][0], self.records[-1][0]
        span = max(end - start, 1e-6)
        rows = {1: [0] * width, -1: [0] * width}
        for when, direction, length in self.records:
            rows[direction][min(width - 1, int((when - start) / span * width))] += length
        peak = max(max(rows[1]), max(rows[-1]), 1)

        def bars(values: list[int]) -> str:
            return "".join(BARS[0 if not v else max(1, round(v / peak * (len(BARS) - 1)))] for v in values)

        return bars(rows[1]), bars(rows[-1])


@dataclass
class Act:
    site: str
    page_bytes: int
    captured: bool  # True: the user's link, recorded; False: bytes read from SOCKS
    plain: Seen
    browser: Seen
    padding: int
    received: int  # what Browser's client read: header, archive and padding
    fetched_plain: int  # the bodies of the page and resources plain Tor fetched
    resources_plain: int
    resources_browser: int


def can_capture() -> bool:
    return os.geteuid() == 0 and shutil.which("dumpcap") is not None


async def browser_act(net: Testnet, say: Callable[[str], None], *, capture_link: bool | None = None) -> Act:
    """Fetch a corpus page with plain Tor and with Browser (1 MB padding) on the first box."""
    corpus, port = net.corpus, net.corpus_port
    boxes = [n for n in net.state.boxes if n.bento_onion]
    if corpus is None or port is None or not boxes:
        raise BentoError("the Browser act needs a testnet with its corpus and a Bento box")
    site = min(corpus.sites, key=lambda s: abs(s.total_bytes - PAGE_BYTES))
    url = site.url(port)
    capture_link = can_capture() if capture_link is None else capture_link
    async with asyncio.timeout(ACT_TIMEOUT):
        with tempfile.TemporaryDirectory(prefix="bento-demo-browser-") as tmp:
            if capture_link:
                say("A user's tor of its own starts; we record its links to the relays.")
                tor = await victim.start(net, Path(tmp) / "user-tor")
                try:
                    return await _fetch_both(net, site.name, site.total_bytes, url, tor, Path(tmp))
                finally:
                    await tor.stop()
            return await _fetch_both(net, site.name, site.total_bytes, url, None, Path(tmp))


async def _fetch_both(net: Testnet, name: str, size: int, url: str, tor: ClientTor | None, tmp: Path) -> Act:
    socks = f"{tor.socks[0]}:{tor.socks[1]}" if tor is not None else net.socks_address
    onion = net.state.boxes[0].bento_onion
    assert onion is not None
    keyring = Keyring(tmp / "keyring.json")
    async with Box(onion, socks=socks) as box:
        # Not watched: the first circuit (which shows the guard), and Browser's upload.
        for attempt in range(3):  # a fresh tor's first circuits may time out on a busy machine
            try:
                await browserlike.fetch(url, socks, isolation=f"warm-up-{attempt}")
                break
            except OSError:
                if attempt == 2:
                    raise
        await browser.deployment(box, keyring)
        watch = await _Watch.of(tor, net, tmp / "link.pcap")

        async def plain() -> tuple[browserlike.PlainPage, int]:
            page = await browserlike.fetch(url, socks, isolation=secrets.token_hex(8))
            return page, page.bytes

        async def padded() -> tuple[browser.Page, int]:
            page = await browser.browse(box, keyring, url, tmp / "page", browser.Options(pad=PAD))
            return page, page.received_bytes

        plain_seen, plain_page = await watch.run(plain)
        browser_seen, page = await watch.run(padded)
    if plain_page.failed:
        raise BentoError(f"plain Tor could not fetch {plain_page.failed} of the page's resources")
    return Act(
        site=name,
        page_bytes=size,
        captured=watch.captured,
        plain=plain_seen,
        browser=browser_seen,
        padding=page.padding_bytes,
        received=page.received_bytes,
        fetched_plain=plain_page.bytes,
        resources_plain=plain_page.resources,
        resources_browser=len(page.resources) - len(page.failed),
    )


class _Watch:
    """Runs a fetch while the user's links are recorded (or, without a capture, just times it).

    Every link of the user's tor to a relay is watched, not only its guard's, as a watcher of
    her link sees them all: its directory fetches from the authorities, and any circuit that
    does not start at the guard.
    """

    def __init__(self, tor: ClientTor | None, relay_ports: list[int], pcap: Path) -> None:
        self.tor, self.relay_ports, self.pcap = tor, relay_ports, pcap

    @property
    def captured(self) -> bool:
        return self.tor is not None

    @classmethod
    async def of(cls, tor: ClientTor | None, net: Testnet, pcap: Path) -> _Watch:
        if tor is None:
            return cls(None, [], pcap)
        return cls(tor, [n.or_port for n in net.nodes if n.or_port], pcap)

    async def run(self, fetch: Callable[[], Awaitable[tuple[T, int]]]) -> tuple[Seen, T]:
        """``fetch`` returns its result and the bytes it read through SOCKS."""
        loop = asyncio.get_running_loop()
        if self.tor is None:
            started = loop.time()
            result, read = await fetch()
            return Seen(loop.time() - started, 0, read, []), result
        pid = self.tor.process.pid
        links = {p: await asyncio.to_thread(victim.link_ports, pid, p) for p in self.relay_ports}
        local = sorted(port for ports in links.values() for port in ports)
        if not local:
            raise BentoError("the user's tor has no connection to a relay")
        either = " or ".join(f"tcp port {p}" for p in local)
        sniffer = Sniffer(self.pcap, f"host 127.0.0.1 and ({either})")
        try:
            async with sniffer:
                started = loop.time()
                result, _ = await fetch()
                seconds = loop.time() - started
        except BentoError:
            if not sniffer.dropped:
                raise  # a lost packet only makes the figures a lower bound, said below
        records = []
        for relay in (relay for relay, ports in links.items() if ports):
            records += await asyncio.to_thread(capture.tls_records, self.pcap, "127.0.0.1", relay)
        records.sort()
        up = sum(length for _, direction, length in records if direction > 0)
        down = sum(length for _, direction, length in records if direction < 0)
        return Seen(seconds, up, down, records, sniffer.dropped or 0), result
