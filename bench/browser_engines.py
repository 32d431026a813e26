"""Browser's two engines on the testnet's corpus: what each captures, and what it costs.

The static engine fetches what a page's HTML and CSS name; the chromium engine (a
headless chromium at the box, every request answered by Browser's fetcher, then the
rendered documents completed as the static engine would) also gets what only a running
script requests. This starts a testnet with one Bento box (which offers the chromium
profile where this host has chromium and Playwright), and fetches a spread of corpus
sites, from the lightest to the heaviest, with each engine through the box's local API
(no Tor: what is captured and the box's cost do not depend on the circuit). Per site and
engine: of the resources the markup names and of those only scripts request, how many
the archive holds; the archive's size; the box's time for the page and the instance's
CPU time and peak memory as the box measured them.

    python bench/browser_engines.py [--sites 10]

Takes about 3 minutes on 2 cores (the testnet start included).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.functions.browser import client as browser
from bento.testnet import Testnet
from bento.testnet.boxes import server_status
from bento.testnet.corpus.model import url
from browser_memory import on_corpus, spread, static_urls
from record import record

MIB = 1 << 20
ENGINES = ("static", "chromium")


async def measure(net: Testnet, count: int, tmp: Path) -> list[dict[str, object]]:
    node = net.state.boxes[0]
    status = server_status(node)
    assert node.bento_onion is not None and net.corpus is not None and net.corpus_port is not None
    port = net.corpus_port
    keyring = Keyring(tmp / "keyring.json")
    rows: list[dict[str, object]] = []
    async with Box(node.bento_onion, socks=None, base_url=f"http://{status['api']}") as box:
        sites = spread(net.corpus, count)
        for engine in ENGINES:  # deployed once each, before anything is measured
            await browser.browse(box, keyring, sites[0].url(port), tmp / f"warm-{engine}",
                                 browser.Options(pad=0, engine=engine))  # fmt: skip
        for site in sites:
            static = static_urls(site, port)
            scripted = {url(s, port) for r in site.resources for s in r.scripted}
            for engine in ENGINES:
                page = await browser.browse(
                    box, keyring, site.url(port), tmp / f"{site.name}-{engine}",
                    browser.Options(pad=0, engine=engine),
                )  # fmt: skip
                assert page.usage is not None
                fetched = {r["url"] for r in page.resources if not r["error"]} | {site.url(port)}
                row: dict[str, object] = {
                    "site": site.name, "engine": engine, "bytes": site.total_bytes,
                    "static": len(static), "static_got": len(fetched & static),
                    "scripted": len(scripted), "scripted_got": len(fetched & scripted),
                    "fetched": len(fetched), "archive": page.archive_bytes,
                    "seconds": float(page.index.get("seconds", 0.0)),
                    "cpu": page.usage.cpu_seconds, "peak": page.usage.peak_memory_bytes / MIB,
                }  # fmt: skip
                print(
                    f"{site.name} {engine}: markup {row['static_got']}/{row['static']}, scripts "
                    f"{row['scripted_got']}/{row['scripted']}, {page.archive_bytes / 1e6:.2f} MB, "
                    f"{row['seconds']:.2f} s at the box, CPU {page.usage.cpu_seconds:.2f} s, "
                    f"peak {row['peak']:.0f} MiB",
                    flush=True,
                )
                rows.append(row)
    return rows


def report(rows: list[dict[str, object]], command: str) -> None:
    lines = [
        "| site | page | engine | named by markup: kept | requested by scripts: kept | archive "
        "| time at the box | CPU | peak memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['site']} | {int(str(r['bytes'])) / 1e6:.2f} MB | {r['engine']} "
            f"| {r['static_got']} / {r['static']} | {r['scripted_got']} / {r['scripted']} "
            f"| {int(str(r['archive'])) / 1e6:.2f} MB | {float(str(r['seconds'])):.2f} s "
            f"| {float(str(r['cpu'])):.2f} s | {float(str(r['peak'])):.0f} MiB |"
        )

    def total(engine: str, key: str) -> int:
        return sum(int(str(r[key])) for r in rows if r["engine"] == engine)

    def median(engine: str, key: str) -> float:
        return statistics.median(float(str(r[key])) for r in rows if r["engine"] == engine)

    summary = [
        f"- {engine}: kept {total(engine, 'static_got')} of {total(engine, 'static')} resources that "
        f"markup names and {total(engine, 'scripted_got')} of {total(engine, 'scripted')} that only "
        f"scripts request; median time at the box {median(engine, 'seconds'):.2f} s, CPU "
        f"{median(engine, 'cpu'):.2f} s, peak memory {median(engine, 'peak'):.0f} MiB"
        for engine in ENGINES
    ]
    ratio = median("chromium", "seconds") / median("static", "seconds")
    summary.append(f"- chromium / static, median time at the box: {ratio:.1f}x")
    body = (
        f"Browser fetching {len(rows) // len(ENGINES)} sites of the testnet's corpus (seed 0), from "
        "the lightest to the heaviest, with each engine, through the box's local API, with no "
        "padding. Time at the box: the page's `seconds` in its index (fetching and rendering, "
        "before packing); CPU and peak memory: the session's usage as the box measured it (peak: "
        "the cgroup's memory.peak, or the highest resident set of the instance's processes).\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(summary)
    )
    record("Browser engines", command, body)


def main() -> None:
    on_corpus("browser_engines.py", __doc__, measure, report)


if __name__ == "__main__":
    main()
