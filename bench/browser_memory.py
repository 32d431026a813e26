"""Browser's memory: the instance's USS and peak while it fetches the testnet's corpus.

The paper (§7.3) reports 16-20 MB for "a Bento server and Browser". This starts a testnet
with one Bento box and its corpus of synthetic sites (bento.testnet.corpus: page weights
and request counts after the HTTP Archive's figures, first and third parties by name),
and has Browser fetch a spread of them, from the lightest to the heaviest, through the
box's local API (no Tor: memory does not depend on the circuit). While it runs, every
20 ms it reads the USS (Private_Clean + Private_Dirty of smaps_rollup) of each Python
process under the Bento server, and the server's RSS. Reported per site: the Browser
instance's USS peak (the largest instance's), the peak the box itself measured for the
session (cgroup or rusage), the server's RSS peak, their sum as the paper's "server +
Browser", and what the static fetch captured of the site (scripts' own requests are
missed by design).

    python bench/browser_memory.py [--sites 10]

Takes about 3 minutes on 2 cores (the testnet start included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.functions.browser import client as browser
from bento.testnet import Testnet, TestnetConfig
from bento.testnet.boxes import server_status
from bento.testnet.corpus import Corpus, Site
from bento.testnet.corpus.model import url
from lifecycle import comm, rss_mib, tree, uss_mib
from record import record

MIB = 1 << 20
Row = TypeVar("Row")
SAMPLE = 0.02


async def sample(server_pid: int, peaks: dict[str, float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        instances = [pid for pid in tree(server_pid)[1:] if _python(pid)]
        for pid in instances:
            with contextlib.suppress(OSError, ValueError):  # it exited between listing and reading
                peaks["uss"] = max(peaks["uss"], uss_mib(pid))
        peaks["server_rss"] = max(peaks["server_rss"], rss_mib(server_pid))
        await asyncio.sleep(SAMPLE)


def _python(pid: int) -> bool:
    try:
        return comm(pid).startswith("python")
    except OSError:
        return False


def spread(corpus: Corpus, count: int) -> list[Site]:
    """``count`` sites from the lightest to the heaviest, evenly by weight."""
    ordered = sorted(corpus.sites, key=lambda s: s.total_bytes)
    if count >= len(ordered):
        return ordered
    return [ordered[round(k * (len(ordered) - 1) / max(1, count - 1))] for k in range(count)]


def static_urls(site: Site, port: int) -> set[str]:
    """What the site's markup and style sheets name (the page included)."""
    found, todo = set(), [site.page]
    while todo:
        resource = todo.pop()
        found.add(url(resource, port))
        todo += [*resource.links, *resource.imports, *([resource.srcset] if resource.srcset else [])]
    return found


async def measure(net: Testnet, count: int, tmp: Path) -> list[dict[str, float]]:
    node = net.state.boxes[0]
    status = server_status(node)
    server_pid = int(str(status["pid"]))
    assert node.bento_onion is not None and net.corpus is not None and net.corpus_port is not None
    port = net.corpus_port
    keyring = Keyring(tmp / "keyring.json")
    rows = []
    async with Box(node.bento_onion, socks=None, base_url=f"http://{status['api']}") as box:
        idle = max((uss_mib(p) for p in tree(server_pid)[1:] if _python(p)), default=0.0)
        for site in spread(net.corpus, count):
            peaks = {"uss": 0.0, "server_rss": 0.0}
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(server_pid, peaks, stop))
            try:
                started = time.monotonic()
                page = await browser.browse(
                    box, keyring, site.url(port), tmp / site.name, browser.Options(pad=0)
                )
                seconds = time.monotonic() - started
            finally:
                stop.set()
                await sampler
            assert page.usage is not None
            fetched = {r["url"] for r in page.resources if not r["error"]} | {site.url(port)}
            static = static_urls(site, port)
            row = {
                "site": site.index, "bytes": site.total_bytes, "count": len(site.resources),
                "static": len(static), "captured": len(fetched & static), "archive": page.archive_bytes,
                "uss": peaks["uss"], "box_peak": page.usage.peak_memory_bytes / MIB,
                "server_rss": peaks["server_rss"], "seconds": seconds, "idle": idle,
            }  # fmt: skip
            print(
                f"{site.name}: {site.total_bytes / 1e6:.2f} MB, {len(site.resources)} resources "
                f"({row['captured']}/{row['static']} named by markup captured): instance USS peak "
                f"{row['uss']:.1f} MiB, box peak {row['box_peak']:.1f} MiB, server RSS "
                f"{row['server_rss']:.1f} MiB, {seconds:.2f} s"
            )
            rows.append(row)
    return rows


def report(rows: list[dict[str, float]], command: str) -> None:
    lines = [
        "| site | bytes | resources | captured / named by markup | instance USS peak (MiB) "
        "| box-measured peak (MiB) | server RSS peak (MiB) | server + Browser (MiB) | time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| s{int(r['site']) + 1:03d} | {int(r['bytes'])} | {int(r['count'])} "
            f"| {int(r['captured'])} / {int(r['static'])} | {r['uss']:.1f} | {r['box_peak']:.1f} "
            f"| {r['server_rss']:.1f} | {r['server_rss'] + r['uss']:.1f} | {r['seconds']:.2f} |"
        )
    uss = [r["uss"] for r in rows]
    body = (
        f"Browser fetching {len(rows)} sites of the testnet's corpus (seed 0), from the lightest to "
        "the heaviest, through the box's local API, with no padding. USS = Private_Clean + "
        "Private_Dirty (smaps_rollup) of the instance's Python, sampled every "
        f"{SAMPLE * 1000:.0f} ms; an idle pooled instance's USS was {rows[0]['idle']:.1f} MiB. The "
        "box-measured peak is the session's `peak_memory_bytes` (the instance's cgroup memory.peak "
        "or maximum RSS: shared pages included). Resources that only scripts request are not "
        "named by markup and are not fetched by the static engine; every one that markup or style "
        "sheets name is. The paper reports 16-20 MB for a Bento server with Browser (§7.3): "
        f"Browser's instance alone uses {min(uss):.1f} to {max(uss):.1f} MiB here; this server "
        "(uvicorn, pydantic, stem) is far larger than the paper's.\n\n" + "\n".join(lines)
    )
    record("Browser memory", command, body)


def on_corpus(
    script: str,
    doc: str | None,
    measure: Callable[[Testnet, int, Path], Awaitable[list[Row]]],
    report: Callable[[list[Row], str], None],
) -> None:
    """The main of a benchmark over ``--sites`` corpus sites: a testnet with one box, then
    ``measure`` on it, then ``report`` with the command that ran."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10, help="corpus sites, spread by weight")
    args = parser.parse_args()
    command = f"python bench/{script} --sites {args.sites}"
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        config = TestnetConfig(directory=Path(tmp) / "net", bento_boxes=1, owner_pid=os.getpid())
        with Testnet.start(config) as net:
            rows = asyncio.run(measure(net, args.sites, Path(tmp)))
    report(rows, command)


def main() -> None:
    on_corpus("browser_memory.py", __doc__, measure, report)


if __name__ == "__main__":
    main()
