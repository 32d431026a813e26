"""Browser's memory: the instance's USS and peak while it fetches pages of several sizes.

The paper (§7.3) reports 16-20 MB for "a Bento server and Browser". This starts a testnet
with one Bento box, serves synthetic pages (first party on 127.0.0.1, third party by the
name ``localhost``; uvicorn + Starlette) spanning the corpus's range, and has Browser
fetch each through the box's local API (no Tor: memory does not depend on the circuit).
While it runs, every 20 ms it reads the USS (Private_Clean + Private_Dirty of
smaps_rollup) of each Python process under the Bento server, and the server's RSS.
Reported per page: the Browser instance's USS peak (the largest instance's), the peak
the box itself measured for the session (cgroup or rusage), the server's RSS peak, and
their sum as the paper's "server + Browser".

    python bench/browser_memory.py [--pages 50KB:5,500KB:30,2MB:70,5MB:150] [--runs 3]

Takes about 2 minutes on 2 cores (the testnet start included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.functions.browser import client as browser
from bento.testnet import Testnet, TestnetConfig
from bento.testnet.boxes import server_status
from lifecycle import comm, rss_mib, tree, uss_mib
from record import record

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser_site import Server, serve  # the test site, shared with the tests

MIB = 1 << 20
SAMPLE = 0.02


def parse_pages(text: str) -> list[tuple[int, int]]:
    units = {"KB": 10**3, "MB": 10**6}
    pages = []
    for item in text.split(","):
        size, _, count = item.partition(":")
        pages.append((int(float(size[:-2]) * units[size[-2:].upper()]), int(count)))
    return pages


def synthetic(size: int, count: int, seed: int) -> tuple[Server, Server, str]:
    """A page of about ``size`` bytes with ``count`` resources, a third of them third-party:
    style sheets, scripts and images in the proportions of a typical page."""
    rng = random.Random(seed)
    first, third = Server("127.0.0.1", "127.0.0.1"), Server("127.0.0.1", "localhost")
    shares = [rng.random() + 0.2 for _ in range(count)]
    sizes = [max(200, int(size * 0.95 * s / sum(shares))) for s in shares]
    tags = []
    for n, length in enumerate(sizes):
        server, origin = (third, "{third}") if n % 3 == 2 else (first, "{first}")
        kind = ("css", "js", "png", "png", "png")[n % 5]
        path = f"/r{n}.{kind}"
        if kind == "css":
            server.files[path] = (b"/*" + b"c" * (length - 4) + b"*/", "text/css")
            tags.append(f'<link rel="stylesheet" href="{origin}{path}">')
        elif kind == "js":
            server.files[path] = (b"//" + b"j" * (length - 2), "text/javascript")
            tags.append(f'<script src="{origin}{path}"></script>')
        else:
            server.files[path] = (os.urandom(length), "image/png")
            tags.append(f'<img src="{origin}{path}">')
    text = "<!doctype html><html><head><title>synthetic</title></head><body>" + "\n".join(tags)
    filler = max(0, size - sum(sizes) - len(text))
    return first, third, text + "<p>" + "w " * (filler // 2) + "</p></body></html>"


def finish(first: Server, third: Server, template: str) -> int:
    """Write the page, now that the servers' ports are known; the bytes of the whole site."""
    html = template.replace("{first}", first.origin).replace("{third}", third.origin)
    first.files["/"] = (html.encode(), "text/html")
    return sum(len(b) for b, _ in first.files.values()) + sum(len(b) for b, _ in third.files.values())


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


async def measure(net: Testnet, pages: list[tuple[int, int]], runs: int, tmp: Path) -> list[dict[str, float]]:
    node = net.state.boxes[0]
    status = server_status(node)
    server_pid = int(str(status["pid"]))
    assert node.bento_onion is not None
    keyring = Keyring(tmp / "keyring.json")
    rows = []
    async with Box(node.bento_onion, socks=None, base_url=f"http://{status['api']}") as box:
        idle = max((uss_mib(p) for p in tree(server_pid)[1:] if _python(p)), default=0.0)
        for size, count in pages:
            for run in range(runs):
                first, third, template = synthetic(size, count, seed=run)
                async with serve(first, third):
                    total = finish(first, third, template)
                    peaks = {"uss": 0.0, "server_rss": 0.0}
                    stop = asyncio.Event()
                    sampler = asyncio.create_task(sample(server_pid, peaks, stop))
                    try:
                        started = time.monotonic()
                        page = await browser.browse(
                            box,
                            keyring,
                            f"{first.origin}/",
                            tmp / f"out-{size}-{run}",
                            browser.Options(pad=0),
                        )
                        seconds = time.monotonic() - started
                    finally:
                        stop.set()
                        await sampler
                assert page.usage is not None and not page.failed, page.failed
                row = {
                    "size": size, "count": count, "bytes": total, "archive": page.archive_bytes,
                    "uss": peaks["uss"], "box_peak": page.usage.peak_memory_bytes / MIB,
                    "server_rss": peaks["server_rss"], "seconds": seconds, "idle": idle,
                }  # fmt: skip
                print(
                    f"{size / 1e6:.2f} MB, {count} resources: instance USS peak {row['uss']:.1f} MiB, "
                    f"box peak {row['box_peak']:.1f} MiB, server RSS {row['server_rss']:.1f} MiB, "
                    f"{seconds:.2f} s"
                )
                rows.append(row)
    return rows


def report(rows: list[dict[str, float]], command: str) -> None:
    lines = [
        "| page | resources | bytes fetched | instance USS peak (MiB) | box-measured peak (MiB) "
        "| server RSS peak (MiB) | server + Browser (MiB) | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, count in dict.fromkeys((r["size"], r["count"]) for r in rows):
        same = [r for r in rows if (r["size"], r["count"]) == (size, count)]

        def med(key: str, same: list[dict[str, float]] = same) -> float:
            return statistics.median(r[key] for r in same)

        lines.append(
            f"| {size / 1e6:g} MB | {int(count)} | {int(med('bytes'))} | {med('uss'):.1f} "
            f"| {med('box_peak'):.1f} | {med('server_rss'):.1f} | {med('server_rss') + med('uss'):.1f} "
            f"| {med('seconds'):.2f} |"
        )
    body = (
        "Browser fetching synthetic pages (first party 127.0.0.1, third party `localhost`) through "
        "a testnet box's local API; medians of "
        f"{len(rows) // max(1, len(dict.fromkeys((r['size'], r['count']) for r in rows)))} runs. "
        "USS = Private_Clean + Private_Dirty (smaps_rollup) of the instance's Python, sampled every "
        f"{SAMPLE * 1000:.0f} ms; an idle pooled instance's USS was {rows[0]['idle']:.1f} MiB. "
        "The box-measured peak is the session's `peak_memory_bytes` (the instance's cgroup "
        "memory.peak or maximum RSS: shared pages included). The paper reports 16-20 MB for a "
        "Bento server with Browser (§7.3).\n\n" + "\n".join(lines)
    )
    record("Browser memory", command, body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", default="50KB:5,500KB:30,2MB:70,5MB:150", help="SIZE:RESOURCES,...")
    parser.add_argument("--runs", type=int, default=3, help="fetches of each page")
    args = parser.parse_args()
    command = f"python bench/browser_memory.py --pages {args.pages} --runs {args.runs}"
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        config = TestnetConfig(directory=Path(tmp) / "net", bento_boxes=1, owner_pid=os.getpid())
        with Testnet.start(config) as net:
            rows = asyncio.run(measure(net, parse_pages(args.pages), args.runs, Path(tmp)))
    report(rows, command)


if __name__ == "__main__":
    main()
