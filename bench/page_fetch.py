"""The paper's Table 2 on the testnet: a whole page through plain Tor vs. through Browser.

Starts a testnet with one Bento box (on exit0) and wide-area latency emulated
(``--wan``: bento.testnet.latency's WAN_HOP_MS one way on every link to a relay,
WAN_WEB_MS between an exit and the corpus's web server), then, for a spread of corpus
sites from the lightest to the heaviest, times from the request to the whole page:

- plain Tor: bento.eval.browserlike, which fetches the page and everything it names
  through the client's SOCKS port as a browser does (six connections per host name);
  each load gets its own circuit (a SOCKS isolation of its own), built before the clock
  starts by fetching one small page on it, as a browser's circuit is ready before a click;
- Browser with 0, 1 and 7 MB padding (to the next multiple of 10^6 or 7*10^6 bytes):
  bento.functions.browser.client.browse, from the request to the padding's last byte
  (also the time to the page, before the padding), over a warm rendezvous circuit to the
  box (the function deployed and its connection up beforehand).

Padding's cost on the same circuit: after each padded load, a plain TCP stream of exactly
the transfer's byte count (page and padding) is read over the same circuit (an ephemeral
onion service on the box's relay carries both: port 80 is the box's API, port 81 a TCP
sender; one SOCKS isolation per repetition). Padding time = from the page's last byte to
the padding's last byte at the client; raw time = from the raw stream's byte at the same
place (the page's length) to its last. Target: padding time <= 1.1x raw time. Loads go
round-robin (every site and condition of repetition 1, then of repetition 2, ...), so that
drift of the shared machine spreads over all.

    python bench/page_fetch.py [--sites 12] [--runs 3] [--runs-7mb 2] [--plot docs/page_fetch.png]
                               [--save docs/page_fetch.json] [--report docs/page_fetch.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from python_socks.async_.asyncio import Proxy

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.eval import browserlike
from bento.functions.browser import client as browser
from bento.testnet import Testnet, TestnetConfig
from bento.testnet.boxes import server_status
from bento.testnet.corpus import Corpus, Site
from bento.testnet.latency import WAN_HOP_MS, WAN_WEB_MS
from browser_memory import spread
from lifecycle import onion_service, reach, tcp_sender
from record import record

MB = 1_000_000
PADS = {"browser-0mb": 0, "browser-1mb": 1 * MB, "browser-7mb": 7 * MB}
CONDITIONS = ("tor", *PADS)
LOAD_TIMEOUT = 300.0
# A padding smaller than this is not compared with a raw stream: a few bytes arrive in one
# read, and the ratio of two near-zero times says nothing.
RATIO_MIN_PADDING = 100_000


@dataclass
class Load:
    seconds: float
    to_page: float = 0.0  # Browser: request -> the page verified and unpacked
    padding: int = 0
    padding_seconds: float = 0.0  # Browser: the page's last byte -> the padding's last byte
    raw_seconds: float = 0.0  # the same bytes at the same place of a raw stream on the same circuit
    received: int = 0


@dataclass
class Results:
    sites: list[Site]
    loads: dict[tuple[int, str], list[Load]] = field(default_factory=dict)
    load_average: list[tuple[float, float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def raw_stream(socks: str, onion: str, total: int, after: int = 0) -> float:
    """Seconds from the ``after``-th byte (the first, by default) to the last of ``total`` bytes
    from the TCP sender.

    Padding follows the page on Browser's stream, so it travels in a flow already under way;
    its baseline is the same bytes at the same place of a raw stream (``after`` = the page's
    bytes), not a fresh stream of the padding alone: a fresh stream smaller than Tor's
    windows arrives as one burst, whose first byte to last says little about the circuit.
    """
    proxy = Proxy.from_url(f"socks5://{socks}")
    sock = await proxy.connect(dest_host=f"{onion}.onion", dest_port=81, timeout=120)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"%d\n" % total)
        await writer.drain()
        received, started = 0, None
        while received < total and (data := await reader.read(1 << 20)):
            received += len(data)
            if started is None and received > after:
                started = time.perf_counter()
        if received != total or started is None:
            raise RuntimeError(f"the raw stream gave {received} of {total} bytes")
        return time.perf_counter() - started
    finally:
        writer.close()


async def plain(site_url: str, warm_url: str, socks: str, isolation: str) -> Load:
    proxy = f"socks5h://{isolation}:x@{socks}"
    async with httpx.AsyncClient(proxy=proxy, timeout=60) as client:
        (await client.get(warm_url)).raise_for_status()  # builds this isolation's circuit
    page = await browserlike.fetch(site_url, socks, isolation=isolation)
    if page.failed:
        raise RuntimeError(f"{page.failed} of {page.resources} resources failed")
    return Load(seconds=page.seconds, received=page.bytes)


async def through_browser(
    box: Box, keyring: Keyring, site_url: str, pad: int, out: Path, circuit: tuple[str, str]
) -> Load:
    page = await browser.browse(box, keyring, site_url, out, browser.Options(pad=pad))
    if page.failed:
        raise RuntimeError(f"{len(page.failed)} of {len(page.resources)} resources failed")
    # The whole page: every byte of the transfer in and the page unpacked, as plain Tor's time
    # is its last byte in; the session's end (the box's report, the WebSocket's close) follows.
    seconds = max(page.seconds_to_last_byte, page.seconds_to_page)
    load = Load(seconds=seconds, to_page=page.seconds_to_page, padding=page.padding_bytes)
    load.received = page.received_bytes
    if page.padding_bytes:
        load.padding_seconds = page.seconds_to_last_byte - page.seconds_to_page_bytes
        page_bytes = page.received_bytes - page.padding_bytes  # the header and the archive
        load.raw_seconds = await raw_stream(circuit[0], circuit[1], page.received_bytes, after=page_bytes)
    return load


async def measure(net: Testnet, args: argparse.Namespace, tmp: Path) -> Results:
    assert net.corpus is not None and net.corpus_port is not None
    node = net.state.boxes[0]
    assert node.bento_onion is not None
    port, socks = net.corpus_port, net.socks_address
    results = Results(sites=spread(net.corpus, args.sites))
    lightest = min(net.corpus.sites, key=lambda s: s.total_bytes)
    warm_url = lightest.url(port)
    api_port = int(str(server_status(node)["api"]).rsplit(":", 1)[1])
    keyring = Keyring(tmp / "keyring.json")
    results.load_average.append(os.getloadavg())
    with tcp_sender() as sender, onion_service(node, {80: api_port, 81: sender}) as shared:
        await reach(socks, shared, 81)
        for run in range(args.runs):
            circuit = f"browser-{run}"
            box_socks = f"{circuit}:x@{socks}"
            async with Box(node.bento_onion, socks=box_socks, base_url=f"http://{shared}.onion") as box:
                await reach(box_socks, shared, 81)  # this repetition's circuit, built
                await browser.browse(box, keyring, warm_url, tmp / f"warm-{run}")  # deployed, connected
                for k, site in enumerate(results.sites):
                    turn = (
                        CONDITIONS[(k + run) % len(CONDITIONS) :] + CONDITIONS[: (k + run) % len(CONDITIONS)]
                    )
                    for condition in turn:
                        if condition == "browser-7mb" and run >= args.runs_7mb:
                            continue
                        try:
                            async with asyncio.timeout(LOAD_TIMEOUT):
                                if condition == "tor":
                                    load = await plain(site.url(port), warm_url, socks, f"tor-{run}-{k}")
                                else:
                                    out = tmp / f"{condition}-{run}-{site.name}"
                                    load = await through_browser(
                                        box,
                                        keyring,
                                        site.url(port),
                                        PADS[condition],
                                        out,
                                        (box_socks, shared),
                                    )
                        except Exception as exc:
                            results.failures.append(f"{site.name} {condition} run {run + 1}: {exc!r}")
                            print(f"FAILED {results.failures[-1]}")
                            continue
                        results.loads.setdefault((site.index, condition), []).append(load)
                        extra = (
                            f", page at {load.to_page:.2f} s, padding {load.padding} B in "
                            f"{load.padding_seconds:.2f} s (raw {load.raw_seconds:.2f} s)"
                            if load.padding
                            else ""
                        )
                        print(
                            f"run {run + 1} {site.name} {condition}: {load.seconds:.2f} s{extra}", flush=True
                        )
            results.load_average.append(os.getloadavg())
    return results


def cell(loads: list[Load], attribute: str = "seconds") -> str:
    values = [getattr(x, attribute) for x in loads]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def median(loads: list[Load], attribute: str = "seconds") -> float:
    return statistics.median(getattr(x, attribute) for x in loads) if loads else float("nan")


def report(results: Results, args: argparse.Namespace, command: str) -> str:
    lines = [
        "| site | page (MB) | resources | plain Tor (s) | Browser 0 MB (s) | Browser 1 MB (s) "
        "| Browser 7 MB (s) | page of 7 MB run (s) | Browser 0 MB / Tor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios_small, ratios_all, pad_ratio = [], [], {1: [], 7: []}  # type: ignore[var-annotated]
    for site in results.sites:
        get = {c: results.loads.get((site.index, c), []) for c in CONDITIONS}
        ratio = median(get["browser-0mb"]) / median(get["tor"])
        ratios_all.append(ratio)
        if site.total_bytes <= 2 * MB:
            ratios_small.append(ratio)
        for pad in (1, 7):
            pad_ratio[pad] += [
                x.padding_seconds / x.raw_seconds
                for x in get[f"browser-{pad}mb"]
                if x.padding >= RATIO_MIN_PADDING
            ]
        bold = f"**{ratio:.2f}**" if ratio <= 1 else f"{ratio:.2f}"
        lines.append(
            f"| {site.name} | {site.total_bytes / MB:.2f} | {len(site.resources)} | {cell(get['tor'])} "
            f"| {cell(get['browser-0mb'])} | {cell(get['browser-1mb'])} | {cell(get['browser-7mb'])} "
            f"| {cell(get['browser-7mb'], 'to_page')} | {bold} |"
        )
    loads = ", ".join(f"{one:.1f}" for one, _, _ in results.load_average)
    small = [r for r in ratios_small if r == r]
    meets_small = all(r <= 1 for r in small) and small
    pads = []
    for pad in (1, 7):
        loads_pad = [x for s in results.sites for x in results.loads.get((s.index, f"browser-{pad}mb"), [])]
        loads_pad = [x for x in loads_pad if x.padding >= RATIO_MIN_PADDING]
        if not loads_pad:
            continue
        ratio = statistics.median(pad_ratio[pad])
        total = sum(x.padding_seconds for x in loads_pad) / sum(x.raw_seconds for x in loads_pad)
        pads.append(
            f"- {pad} MB: padding {median(loads_pad, 'padding') / MB:.2f} MB median per load; padding time "
            f"{cell(loads_pad, 'padding_seconds')} s, the same bytes raw {cell(loads_pad, 'raw_seconds')} s; "
            f"padding / raw: median **{ratio:.2f}**, min {min(pad_ratio[pad]):.2f}, max "
            f"{max(pad_ratio[pad]):.2f} (n={len(pad_ratio[pad])}); all loads together (sum over sum) "
            f"**{total:.2f}**; target <= 1.1: {'meets' if ratio <= 1.1 else 'MISSES'} it by the median, "
            f"{'meets' if total <= 1.1 else 'MISSES'} it by the sums"
        )
    runs_7 = min(args.runs, args.runs_7mb)
    body = f"""\
Time from the request to the whole page, in seconds (plain Tor: its last byte in; Browser: the
transfer's last byte in, padding included, and the page verified and unpacked, whichever comes
later; the session's end that follows, the box's report and the WebSocket's close, is not
counted): median (min-max) of {args.runs} loads per
site and condition ({runs_7} for 7 MB padding), on a testnet with wide-area latency emulated
(`--wan`): {WAN_HOP_MS:g} ms one way on every link to a relay and {WAN_WEB_MS:g} ms one way between
an exit (or the box) and the web server (round trips of {2 * WAN_HOP_MS:g} and {2 * WAN_WEB_MS:g} ms,
after WonderNetwork's ping statistics between European hubs and across the Atlantic: see
`bento/testnet/latency.py`), in user space (this kernel has no netem), no bandwidth limit.
{len(results.sites)} corpus sites (seed 0) spread by weight. Plain Tor: `bento.eval.browserlike`
(the page and every resource its markup and style sheets name, six connections per host,
names resolved at the exit), each load on a circuit of its own, built beforehand; like Tor
Browser today, it waits for tor's SOCKS answer before it sends a request. Browser: a warm
rendezvous circuit to the box on exit0 (the user reaches boxes by their onion services: 6 relay
links to cross against plain Tor's 3, so Browser's stream has the longer round trip); Bento's
client sends its request with the SOCKS CONNECT (Tor's optimistic data, `bento/client/tor_socks.py`),
which saves the session's start one round trip of that path; at the box, Browser fetches 16
resources at once, at most 6 per host name, as plain Tor's client does; padding to the next
multiple of 10^6 or 7*10^6
bytes; "page of 7 MB run" is the time to the page (the rest is padding). Bold ratio: Browser
without padding faster than plain Tor. The paper's Table 2 (live Tor, 5 sites): plain Tor 3.1-8.5 s,
Browser 0 MB 5.9-8.1 s, 1 MB 21-38 s, 7 MB 82-92 s.

{chr(10).join(lines)}

- Browser 0 MB / plain Tor, pages up to 2 MB: {", ".join(f"{r:.2f}" for r in small) or "none"};
  target <= 1 (no slower): {"meets" if meets_small else "MISSES"} it{"" if meets_small else " on some"};
  all sites: median {statistics.median([r for r in ratios_all if r == r]):.2f}
- Padding's cost on the same circuit (padding time: the page's last byte to the padding's last
  byte at the client, which reads on while it verifies and unpacks the page; raw: a plain TCP
  stream of the whole transfer's size over the same circuit, an ephemeral onion service on
  exit0's tor carrying the box's API and a TCP sender, from its byte at the page's length to
  its last, so that the same bytes are timed at the same place of a flow; loads padded with
  {RATIO_MIN_PADDING // 1000} KB or more):
{chr(10).join("  " + p for p in pads)}
- load average (1 min) at the start and after each repetition: {loads} on {os.cpu_count()} cores
  (the machine is shared with other work: absolute times vary with it; the ratios are taken within
  the same run)
"""
    if results.failures:
        body += f"- failed loads ({len(results.failures)}): " + "; ".join(results.failures) + "\n"
    if args.report:
        body += (
            f"- reported again from the raw figures in `{args.report}` (times to 10 ms), without a run; "
            "the run itself was the command above without `--report`\n"
        )
    if args.plot:
        body += f"\n![Table 2 as a plot]({Path(args.plot).name})\n"
    record("Page fetch (Table 2)", command, body)
    return body


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4.5))
    width = 0.2
    for offset, condition in enumerate(CONDITIONS):
        xs, ys, low, high = [], [], [], []
        for k, site in enumerate(results.sites):
            loads = results.loads.get((site.index, condition), [])
            if loads:
                m = median(loads)
                xs.append(k + (offset - 1.5) * width)
                ys.append(m)
                low.append(m - min(x.seconds for x in loads))
                high.append(max(x.seconds for x in loads) - m)
        label = "plain Tor" if condition == "tor" else f"Browser {PADS[condition] // MB} MB"
        axes.bar(xs, ys, width, yerr=[low, high], capsize=2, label=label)
    axes.set_xticks(
        range(len(results.sites)),
        [f"{s.name}\n{s.total_bytes / MB:.1f} MB" for s in results.sites],
        fontsize=7,
    )
    axes.set_ylabel("request to whole page (s)")
    axes.set_title(
        f"Page fetch on the testnet, {WAN_HOP_MS:g} ms per hop, {WAN_WEB_MS:g} ms to the web server"
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def save(results: Results, path: Path) -> None:
    """The raw figures, so that the report can be made again (``--report``) without a run."""
    loads = [
        {"site": site, "condition": condition, **vars(load)}
        for (site, condition), runs in results.loads.items()
        for load in runs
    ]
    data = {
        "sites": [s.index for s in results.sites],
        "loads": loads,
        "load_average": results.load_average,
        "failures": results.failures,
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def load(path: Path) -> Results:
    data = json.loads(path.read_text())
    corpus = Corpus(seed=0, sites=100)
    results = Results(sites=[corpus.sites[i] for i in data["sites"]])
    for item in data["loads"]:
        key = (item.pop("site"), item.pop("condition"))
        results.loads.setdefault(key, []).append(Load(**item))
    results.load_average = [tuple(x) for x in data["load_average"]]
    results.failures = data["failures"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=12, help="corpus sites, spread by weight")
    parser.add_argument("--runs", type=int, default=3, help="loads per site and condition")
    parser.add_argument("--runs-7mb", type=int, default=3, help="at most this many loads with 7 MB padding")
    parser.add_argument("--plot", default="", help="write a PNG plot here (in docs/, linked from the record)")
    parser.add_argument("--save", default="", help="write the raw figures here (JSON)")
    parser.add_argument("--report", default="", help="no run: report the raw figures saved with --save")
    args = parser.parse_args()
    command = f"python bench/page_fetch.py --sites {args.sites} --runs {args.runs} --runs-7mb {args.runs_7mb}"
    for option in ("plot", "save", "report"):
        if getattr(args, option):
            command += f" --{option} {getattr(args, option)}"
    if args.report:
        results = load(Path(args.report))
        report(results, args, command)
        if args.plot:
            plot(results, Path(args.plot))
        return
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        config = TestnetConfig(
            directory=Path(tmp) / "net",
            bento_boxes=1,
            hop_delay_ms=WAN_HOP_MS,
            web_delay_ms=WAN_WEB_MS,
            bootstrap_timeout=300,
            owner_pid=os.getpid(),
        )
        with Testnet.start(config, progress=print) as net:
            results = asyncio.run(measure(net, args, Path(tmp)))
    if args.save:
        save(results, Path(args.save))
    report(results, args, command)
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
