"""``bento browse URL --box EXIT``: a whole page fetched at an exit by Browser, padded.

Deploys Browser to the box (or reuses the deployment of the same code in the keyring),
fetches, verifies the archive against its header, unpacks it into ``--out`` made inert
(opened, it requests nothing), and reports once the padding has arrived too (only then is
it safe to do anything else on the link). ``--open`` then shows it in the local viewer,
and ``--serve`` runs the viewer alone: browsing, every page through Browser
(``browse_viewer``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from bento.cli import browse_viewer, client_options, cover_options
from bento.cli.boxes import find_box
from bento.cli.dropbox import parse_duration
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.discovery import discover, resolve
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.browser import client as browser
from bento.functions.browser import via_dropbox
from bento.functions.browser.pad import SCHEMES
from bento.functions.browser.timing import DEFAULT_RATE
from bento.functions.browser.wire import ENGINES

DEFAULT_PAD = 1_000_000  # the paper's nominal 1 MB: Deep Fingerprinting falls from 93.9% to 8.25%
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``1MB`` (10^6), ``512KiB`` (2^10), ``0``, ``1048576``: a byte count."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 0, 512KB, 1MB, 1MiB, 7MB)")
    return int(float(match.group(1)) * _UNITS[unit])


def _deadlines(text: str) -> tuple[float, ...]:
    """``5,10,20,40``: seconds after the request."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not seconds separated by commas (e.g. 5,10,20,40)"
        ) from None


def _rate(text: str) -> int:
    """``500KB/s``, ``1MB``: bytes per second."""
    return parse_size(text.removesuffix("/s"))


def _cookie(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.strip(), value


def add_browse(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        help="the page: an http:// or https:// URL, fetched at the exit (with --serve: the first)",
    )
    parser.add_argument("--box", required=True, help="the exit box: nickname, fingerprint or onion address")
    parser.add_argument(
        "--pad", type=parse_size, default=None, metavar="SIZE",
        help="pad the transfer to a multiple of SIZE (default 1MB; 0: no padding)",
    )  # fmt: skip
    parser.add_argument(
        "--pad-scheme", choices=SCHEMES, default="multiple",
        help="multiple: to a multiple of --pad; padme: PURBs' Padmé (at most 12%% more, no size to choose)",
    )  # fmt: skip
    parser.add_argument(
        "--engine", choices=ENGINES, default="static",
        help="static: the page and what its HTML and CSS name (default); chromium: the page as a headless "
        "browser at the box builds it, with what its scripts request (on boxes whose policy offers the "
        "chromium syscall profile)",
    )  # fmt: skip
    timed = parser.add_argument_group(
        "timing: hide when the page was ready, as padding hides its size (see docs/evaluation.md)"
    )
    timed.add_argument(
        "--deliver-at", type=_deadlines, metavar="S,S,...",
        help="deliver the page in the window of the first of these deadlines (seconds after the request, "
        "e.g. 5,10,20,40) it is ready for and fits in: from half the deadline to it, at --deliver-rate, "
        "padded to fill it (instead of --pad)",
    )  # fmt: skip
    timed.add_argument(
        "--deliver-rate", type=_rate, default=DEFAULT_RATE, metavar="RATE",
        help=f"bytes per second of the window, e.g. 500KB/s (default {DEFAULT_RATE // 1000}KB/s)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="directory to unpack into (default: HOST-TIME, created)")
    viewing = parser.add_argument_group("viewing: pages shown by a local viewer, every page through Browser")
    viewing.add_argument(
        "--serve", action="store_true",
        help="run the viewer on 127.0.0.1 until Ctrl-C: an address bar, links and GET forms fetched through "
        "Browser, back and forward; prints its address (it holds this run's secret)",
    )  # fmt: skip
    viewing.add_argument(
        "--open", action="store_true",
        help="open the page in the viewer, in a browser (fails where there is no display); the viewer then "
        "runs until Ctrl-C",
    )  # fmt: skip
    viewing.add_argument(
        "--browser", metavar="COMMAND", help="the browser --open starts (default: the system's)"
    )
    viewing.add_argument(
        "--history", type=Path, metavar="FILE",
        help="when the viewer stops, save its history (the addresses visited) to FILE; by default it is "
        "held in memory only",
    )  # fmt: skip
    viewing.add_argument(
        "--port", type=int, default=0, help="the viewer's port on 127.0.0.1 (default: any free one)"
    )
    parser.add_argument("--user-agent", default="", help="the User-Agent the box sends (default: Firefox's)")
    parser.add_argument(
        "--cookie", type=_cookie, action="append", default=[], metavar="NAME=VALUE",
        help="a cookie for the page's own host (repeatable)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, help="seconds for each request at the box (default 20)")
    parser.add_argument(
        "--concurrency", type=int, help="requests at once at the box (default 16; at most 6 to one host)"
    )
    via = parser.add_argument_group("composition: deposit the page with a Dropbox and go away")
    via.add_argument(
        "--via-dropbox", metavar="BOX",
        help="Browser deposits the padded page with a Dropbox on BOX; prints its capability and returns",
    )  # fmt: skip
    via.add_argument("--fetches", type=int, default=1, help="how many times the deposit may be fetched")
    via.add_argument("--expires", type=parse_duration, default=86400.0, metavar="DURATION",
                     help="when the deposit self-destructs (default 1d; 90s, 30m, 12h, 7d)")  # fmt: skip
    cover_options.add(parser)
    client_options.add(parser, control=True)
    parser.set_defaults(handler=cmd_browse)


def _options(args: argparse.Namespace) -> browser.Options:
    if args.pad_scheme == "padme" and args.pad is not None:
        raise BentoError(
            "Padmé chooses the padded size itself", fix="drop --pad, or use --pad-scheme multiple"
        )
    timing = _timing(args)
    if timing is not None and (args.pad is not None or args.pad_scheme != "multiple"):
        raise BentoError(
            "--deliver-at pads the transfer to fill its window", fix="drop --pad and --pad-scheme"
        )
    limits = {
        k: v for k, v in (("timeout", args.timeout), ("concurrency", args.concurrency)) if v is not None
    }
    return browser.Options(
        pad=0
        if timing is not None or args.pad_scheme != "multiple"
        else DEFAULT_PAD
        if args.pad is None
        else args.pad,
        scheme=args.pad_scheme,
        user_agent=args.user_agent,
        cookies=dict(args.cookie),
        limits=limits,
        cover=cover_options.from_args(args),
        engine=args.engine,
        timing=timing,
    )


def _timing(args: argparse.Namespace) -> browser.Timing | None:
    from pydantic import ValidationError

    if args.deliver_at is None:
        return None
    try:
        return browser.Timing(deadlines=args.deliver_at, rate=args.deliver_rate)
    except ValidationError as exc:  # the schedule breaks one of Browser's rules (timing.py)
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise BentoError(
            f"Browser cannot keep this schedule: {problems}", fix="see bento browse --help"
        ) from None


def cmd_browse(args: argparse.Namespace) -> int:
    if args.open:
        browse_viewer.check_display()  # before anything is fetched
    if args.url is None and not args.serve:
        raise BentoError(
            "name the page to fetch", fix="bento browse URL --box BOX, or --serve for the viewer"
        )
    parts = urlsplit(args.url or "http://nothing/")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BentoError(f"{args.url!r} is not an http:// or https:// URL", fix="give the page's full URL")
    options = _options(args)
    if args.via_dropbox:
        return _via_dropbox(args, options)
    if args.serve:
        if args.out:
            raise BentoError("the viewer keeps pages in memory, not on disk", fix="drop --out, or --serve")
        return browse_viewer.serve(args, options, find_box(args), first=args.url)
    out = args.out or Path(f"{parts.hostname}-{time.strftime('%Y%m%d-%H%M%S')}")
    info = find_box(args)
    keyring = Keyring(args.keyring)

    async def run() -> browser.Page:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=errors,
            disable=args.json,
            transient=True,
        ) as bar:
            task = bar.add_task(f"Browser on {info.nickname}", total=None)
            async with Box(info.onion, socks=args.socks, info=info) as box:
                return await browser.browse(
                    box,
                    keyring,
                    args.url,
                    out,
                    options,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )

    page = asyncio.run(run())
    if args.json:
        emit_json({**page.as_json(), "box": info.nickname, "scheme": options.scheme, "pad": options.pad})
        return browse_viewer.serve(args, options, info, saved=page) if args.open else 0
    how = "deployed now" if page.deployed else "reused"
    console.print(f"fetched [bold]{args.url}[/bold] through Browser on {info.nickname} ({how})")
    console.print(f"  page:      {page.main}")
    failed = page.failed
    console.print(f"  resources: {len(page.resources)}" + (f", {len(failed)} not fetched" if failed else ""))
    scheme = f"multiple of {options.pad} B" if options.scheme == "multiple" else "Padmé"
    console.print(
        f"  bytes:     {page.archive_bytes} archive + {page.padding_bytes} padding = "
        f"{page.received_bytes} on your link ({scheme})"
    )
    console.print(
        f"  time:      page after {page.seconds_to_page:.2f} s, padding done after "
        f"{page.seconds_to_last_byte:.2f} s, session closed after {page.seconds:.2f} s "
        f"(the box fetched for {page.index.get('seconds', 0)} s)"
    )
    if page.deadline is not None:
        missed = (
            f" (not ready for, or too big for, {page.deadlines_missed} earlier)"
            if page.deadlines_missed
            else ""
        )
        console.print(f"  delivered: in the window of the {page.deadline:g} s deadline{missed}")
    if page.cover is not None:
        cover = page.cover
        console.print(
            f"  cover:     {cover['rate']} cells/s each way "
            f"({cover['bytes_per_second'] / 1000:.0f} KB/s on your link) for {cover['seconds']:.1f} s: "
            f"{cover['frames']} frames out, {cover['frames_in']} in"
        )
    if page.usage is not None:
        console.print(
            f"  at the box: {page.usage.cpu_seconds:.2f} s CPU, "
            f"{page.usage.peak_memory_bytes / 2**20:.1f} MiB peak memory, "
            f"{page.usage.network_granted} connection(s)"
        )
    for resource in failed[:10]:
        errors.print(f"[yellow]not fetched[/yellow] {resource.get('url')}: {resource.get('error')}")
    if len(failed) > 10:
        errors.print(f"[yellow]… and {len(failed) - 10} more[/yellow] (see {page.directory}/bento-page.json)")
    if args.open:  # the copy stays where it is; the viewer shows it, and fetches what is followed
        return browse_viewer.serve(args, options, info, saved=page)
    return 0


def _via_dropbox(args: argparse.Namespace, options: browser.Options) -> int:
    """The poster's figure 2: Browser deposits the page with a Dropbox on another box; we
    leave as soon as the deposit is reserved, with the capability that fetches it."""
    if args.open or args.serve or args.out or options.cover is not None or options.timing is not None:
        raise BentoError(
            "with --via-dropbox the page goes to the Dropbox, not here (and there is no transfer to cover)",
            fix="drop --open/--serve/--out/--cover/--deliver-at; then: bento dropbox get CAPABILITY --page D",
        )
    found = discover(args.control)
    info, other = resolve(args.box, found), resolve(args.via_dropbox, found)
    keyring = Keyring(args.keyring)

    async def run() -> via_dropbox.Deposit:
        async with Box(info.onion, socks=args.socks, info=info) as box:
            return await via_dropbox.deposit(
                box, keyring, args.url, other.onion, options, fetches=args.fetches, seconds=args.expires
            )

    deposit = asyncio.run(run())
    if args.json:
        emit_json({**deposit.as_json(), "box": info.nickname, "dropbox": other.nickname})
        return 0
    errors.print(
        f"Browser on {info.nickname} is fetching {args.url} (session {deposit.session_id}) into a "
        f"Dropbox on {other.nickname}; you may go offline. Fetch the page later "
        f"({deposit.terms.get('fetches_left')} fetch(es), self-destructs in {args.expires:g} s) with "
        "`bento dropbox get CAPABILITY --page DIR --page-key KEY`; whoever holds the capability can "
        "fetch it, and only whoever also holds the key can read it:"
    )
    console.print(str(deposit.capability))
    console.print(deposit.as_json()["page_key"])
    return 0
