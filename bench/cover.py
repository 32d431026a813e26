"""Link cover, as a watcher of the client's link sees it: rate, steadiness, overhead, latency.

Starts a testnet with one Bento box (on exit0), a victim tor with one guard (the
evaluation's: bento.eval.victim), and loads corpus sites, from the lightest to the
heaviest, through Browser (no padding) twice each way: without cover, and with link cover
at ``--rate`` cells/s each way in a ``--window`` s window (1 s lead, 1 s tail). Each load's
link to the guard is captured with the evaluation's capture (dumpcap, bento.eval.sniff;
TLS records, bento.eval.capture), and from it:

- the rate the watcher sees inside the cover window (bytes per second each way, both
  directions together), against the nominal ``rate * 514`` bytes per second each way;
- its variation in time: the coefficient of variation of the bytes per 100 ms (both
  directions), over the window less its first and last 0.5 s (target: under 5%);
- the overhead: bytes on the link for the whole load, cover against none;
- the latency cover adds to Browser: time to the page (the archive's last byte), and to
  the end of the session, cover against none.

    python bench/cover.py [--sites 4] [--runs 2] [--rate 1000] [--burst 10] [--window 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bento.client.box import Box
from bento.client.cover import Cover
from bento.client.keyring import Keyring
from bento.eval import capture, victim
from bento.eval.sniff import Sniffer
from bento.functions.browser import client as browser
from bento.protocol.cover import CELL_BYTES, frame_size
from bento.protocol.cover_channel import CoverChannel
from bento.testnet import Testnet, TestnetConfig
from browser_memory import spread
from record import record

BIN = 0.1  # seconds: the watcher's resolution
EDGE = 0.5  # seconds left out at each end of the window (the pacers of the two sides start apart)


@dataclass
class Load:
    site: str
    covered: bool
    seconds: float  # request to the end of the session (with cover: of the window)
    to_page: float
    link_bytes: int  # both directions, the whole capture
    page_bytes: int
    up: float = 0.0  # bytes/s in the window, client to guard
    down: float = 0.0
    cv: float = 0.0  # of the bytes per 100 ms, both directions, in the window
    cv_up: float = 0.0  # the same, each direction alone
    cv_down: float = 0.0
    bins: int = 0
    frames: int = 0  # the client's pacer: frames sent, and of them sent late or never sent
    late: int = 0


def steadiness(
    records: list[tuple[float, int, int]], start: float, end: float
) -> tuple[float, float, float, int, float, float]:
    """Bytes/s up and down, the CV of bytes per BIN (both directions), over [start + EDGE,
    end - EDGE]; and the CV of each direction alone (which side's pacing is unsteady)."""
    first, last = start + EDGE, end - EDGE
    count = int((last - first) / BIN)
    if count < 2:
        return 0.0, 0.0, 0.0, 0, 0.0, 0.0
    bins, ups, downs = [0] * count, [0] * count, [0] * count
    for when, direction, length in records:
        k = int((when - first) / BIN)
        if 0 <= k < count:
            bins[k] += length
            (ups if direction > 0 else downs)[k] += length
    span = count * BIN

    def cv(values: list[int]) -> float:
        mean = statistics.fmean(values)
        return statistics.pstdev(values) / mean if mean else 0.0

    return sum(ups) / span, sum(downs) / span, cv(bins), count, cv(ups), cv(downs)


async def pacer_alone(rate: int, burst: int, seconds: float = 5.0) -> float:
    """The CV of frames per BIN of a pacer alone (no network, no Tor): what the host allows."""
    sent: list[float] = []

    async def send_raw(frame: bytes) -> None:
        sent.append(time.monotonic())

    async def receive_raw() -> bytes | None:
        await asyncio.Event().wait()
        return None

    channel = CoverChannel(send_raw, receive_raw, period=burst / rate, frame_size=frame_size(burst))
    async with channel:
        await asyncio.sleep(seconds)  # a measurement's length, not a synchronisation
    bins = [0] * int(seconds / BIN - 1)
    for when in sent:
        k = int((when - sent[0]) / BIN)
        if k < len(bins):
            bins[k] += 1
    return statistics.pstdev(bins) / statistics.fmean(bins)


async def one_load(
    box: Box, keyring: Keyring, url: str, out: Path, cover: Cover | None, link: tuple[int, int], pcap: Path
) -> tuple[browser.Page, list[tuple[float, int, int]]]:
    pid, guard_port = link
    ports = await asyncio.to_thread(victim.link_ports, pid, guard_port)
    either = " or ".join(f"tcp port {p}" for p in sorted(ports))
    async with Sniffer(pcap, f"host 127.0.0.1 and tcp port {guard_port} and ({either})"):
        page = await browser.browse(box, keyring, url, out, browser.Options(pad=0, cover=cover))
    records = await asyncio.to_thread(capture.tls_records, pcap, "127.0.0.1", guard_port)
    return page, records


async def measure(net: Testnet, args: argparse.Namespace, tmp: Path) -> tuple[list[Load], list[str], float]:
    assert net.corpus is not None and net.corpus_port is not None
    node = net.state.boxes[0]
    assert node.bento_onion is not None
    guard = victim.guards(net)[0]
    assert guard.or_port is not None
    alone = await pacer_alone(args.rate, args.burst)
    print(f"the pacer alone: CV {alone:.1%} of frames per 100 ms", flush=True)
    tor = await victim.start(net, tmp / "victim-tor", guard)
    loads: list[Load] = []
    failures: list[str] = []
    cover = Cover(rate=args.rate, burst=args.burst, lead=1.0, duration=args.window, tail=1.0)
    try:
        socks = f"{tor.socks[0]}:{tor.socks[1]}"
        keyring = Keyring(tmp / "keyring.json")
        sites = spread(net.corpus, args.sites)
        async with Box(node.bento_onion, socks=socks) as box:
            await browser.browse(box, keyring, sites[0].url(net.corpus_port), tmp / "warm")  # deployed
            await victim.check_guard(tor, guard)
            link = (tor.process.pid, guard.or_port)
            for run in range(args.runs):
                for site in sites:
                    for covered in (False, True) if run % 2 == 0 else (True, False):
                        out = tmp / f"{site.name}-{run}-{covered}"
                        try:
                            async with asyncio.timeout(300):
                                page, records = await one_load(
                                    box, keyring, site.url(net.corpus_port), out,
                                    cover if covered else None, link,
                                    (args.keep or tmp) / f"{site.name}-{run}-{covered}.pcap",
                                )  # fmt: skip
                        except Exception as exc:
                            failures.append(f"{site.name} cover={covered} run {run + 1}: {exc!r}")
                            print("FAILED", failures[-1], flush=True)
                            continue
                        load = Load(
                            site.name, covered, page.seconds, page.seconds_to_page,
                            sum(length for _, _, length in records), page.archive_bytes,
                        )  # fmt: skip
                        if page.cover is not None:
                            start = float(page.cover["started_wall"])
                            end = start + float(page.cover["seconds"]) - cover.tail  # the close began
                            load.up, load.down, load.cv, load.bins, load.cv_up, load.cv_down = steadiness(
                                records, start, end
                            )
                            load.frames = int(page.cover["frames"])
                            load.late = int(page.cover["late"]) + int(page.cover["skipped"])
                            if load.up + load.down < 0.25 * 2 * args.rate * CELL_BYTES:
                                failures.append(f"{site.name} run {run + 1}: the capture missed the window")
                                print("FAILED", failures[-1], flush=True)
                                continue
                        loads.append(load)
                        print(
                            f"run {run + 1} {site.name} ({page.archive_bytes} B) cover={covered}: "
                            f"{load.seconds:.2f} s, page at {load.to_page:.2f} s, link {load.link_bytes} B"
                            + (f", CV {load.cv:.2%} over {load.bins} bins" if covered else ""),
                            flush=True,
                        )
    finally:
        await tor.stop()
    return loads, failures, alone


def report(
    loads: list[Load], failures: list[str], alone: float, args: argparse.Namespace, command: str
) -> None:
    nominal = args.rate * CELL_BYTES
    covered = [x for x in loads if x.covered]
    rows = [
        "| site | page | CV per 100 ms | CV up / down alone | up | down | pacer frames late "
        "| link bytes, cover / none | to page, cover / none | to end, cover / none |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for site in dict.fromkeys(x.site for x in loads):
        mine = [x for x in covered if x.site == site]
        plain = [x for x in loads if x.site == site and not x.covered]
        if not mine or not plain:
            continue
        med = statistics.median
        rows.append(
            f"| {site} | {mine[0].page_bytes / 1e6:.2f} MB | {med(x.cv for x in mine):.2%} "
            f"| {med(x.cv_up for x in mine):.1%} / {med(x.cv_down for x in mine):.1%} "
            f"| {med(x.up for x in mine) / 1000:.0f} KB/s | {med(x.down for x in mine) / 1000:.0f} KB/s "
            f"| {sum(x.late for x in mine) / max(1, sum(x.frames for x in mine)):.1%} "
            f"| {med(x.link_bytes for x in mine) / 1e6:.2f} / "
            f"{med(x.link_bytes for x in plain) / 1e6:.2f} MB "
            f"| {med(x.to_page for x in mine):.2f} / {med(x.to_page for x in plain):.2f} s "
            f"| {med(x.seconds for x in mine):.2f} / {med(x.seconds for x in plain):.2f} s |"
        )
    cvs = [x.cv for x in covered]
    overhead = sum(x.link_bytes for x in covered) / max(1, sum(x.link_bytes for x in loads if not x.covered))
    body = (
        f"Link cover at {args.rate} cells/s each way (burst {args.burst}: a frame every "
        f"{args.burst / args.rate * 1000:.0f} ms; nominal {nominal / 1000:.0f} KB/s each way on the wire), "
        f"a {args.window:g} s window (1 s lead, 1 s tail), Browser without padding; {args.runs} loads of "
        f"each site each way, alternating. The watcher is the evaluation's: dumpcap on the victim tor's "
        f"link to its guard, TLS records (bento.eval.capture). CV: of the bytes per 100 ms, both "
        f"directions, over the window less its first and last {EDGE} s. Pacer frames late: of the "
        f"client's frames, those its pacer sent late (catching up) or skipped, a measure of how "
        f"often the host stalled it.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + (
            f"- CV per 100 ms under cover: median {statistics.median(cvs):.2%}, worst {max(cvs):.2%} "
            f"(target < 5%: {'met' if max(cvs) < 0.05 else 'NOT met'} on every load)\n"
            if cvs
            else "- no covered load completed\n"
        )
        + f"- the client's pacer alone on this host (no network, no Tor), the same 5 s: CV {alone:.1%} "
        f"of its frames per 100 ms: the floor the host puts under the figures above\n"
        + f"- bytes on the link, all covered loads against all uncovered: {overhead:.1f}x\n"
        + f"- load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
        + (f"- failures: {'; '.join(failures)}\n" if failures else "")
    )
    params = f", consensus {' '.join(args.consensus_param)}" if args.consensus_param else ""
    record(f"Link cover at {args.rate} cells/s (bench/cover.py{params})", command, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rate", type=int, default=1000, help="cells per second each way")
    parser.add_argument("--burst", type=int, default=10, help="cells per frame")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of cover at least")
    parser.add_argument("--keep", type=Path, help="keep every load's capture (pcap) in this directory")
    parser.add_argument(
        "--consensus-param", action="append", default=[], metavar="NAME=VALUE",
        help="a parameter the testnet's authorities vote for, e.g. cc_alg=0 (congestion control off)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    command = "python bench/cover.py " + " ".join(sys.argv[1:])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bento-bench-cover-") as tmp:
        config = TestnetConfig(
            directory=Path(tmp) / "net", bento_boxes=1, bootstrap_timeout=300, owner_pid=os.getpid(),
            consensus_params=tuple(args.consensus_param),
        )  # fmt: skip
        with Testnet.start(config, progress=print) as net:
            loads, failures, alone = asyncio.run(measure(net, args, Path(tmp)))
    report(loads, failures, alone, args, command.strip())
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
