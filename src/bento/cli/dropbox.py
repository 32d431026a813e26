"""``bento dropbox put FILE --box B`` and ``bento dropbox get CAPABILITY``.

``put`` seals a file under a fresh key and deposits it with a Dropbox on the box (deployed,
or reused from the keyring), and prints the capability that fetches and opens it; ``get``
fetches with that capability alone, so it can be handed to someone else, or kept for later,
and refuses a deposit the box altered or swapped.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from bento.cli import client_options
from bento.cli.boxes import find_box
from bento.cli.files import refuse_existing, write_private
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.dropbox import client as dropbox

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (examples: 90s, 30m, 12h, 7d)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def add_dropbox(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="dropbox_command", required=True, metavar="ACTION")
    put = actions.add_parser("put", help="seal and deposit a file; prints the capability that fetches it")
    put.add_argument("file", type=Path, help="the file to deposit ('-': standard input)")
    put.add_argument("--box", required=True, help="nickname, fingerprint or onion address")
    put.add_argument("--fetches", type=int, default=1, help="how many times it may be fetched (default 1)")
    put.add_argument("--expires", type=parse_duration, default=86400.0, metavar="DURATION",
                     help="when it self-destructs (default 1d; 90s, 30m, 12h, 7d)")  # fmt: skip
    client_options.add(put, control=True)
    put.set_defaults(handler=cmd_put)
    get = actions.add_parser("get", help="fetch and open a deposit with its capability")
    get.add_argument("capability", help="the bento-dropbox:... string `put` printed")
    get.add_argument("--out", type=Path, help="file to write (default: standard output)")
    get.add_argument("--force", action="store_true", help="overwrite the --out file if it exists")
    get.add_argument(
        "--page", type=Path, metavar="DIR",
        help="the deposit is a page from `bento browse --via-dropbox`: verify and unpack it into DIR",
    )  # fmt: skip
    get.add_argument(
        "--page-key", metavar="KEY", help="with --page: the page key `bento browse --via-dropbox` printed"
    )
    client_options.add(get)
    get.set_defaults(handler=cmd_get)


def cmd_put(args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    except OSError as exc:
        raise BentoError(f"cannot read {args.file}: {exc.strerror}") from None
    info = find_box(args)
    keyring = Keyring(args.keyring)

    async def run() -> tuple[dropbox.Capability, dict[str, object]]:
        async with Box(info.onion, socks=args.socks, info=info) as box:
            return await dropbox.put(box, keyring, data, fetches=args.fetches, seconds=args.expires)

    capability, terms = asyncio.run(run())
    if args.json:
        emit_json({"capability": str(capability), "box": info.nickname, **terms})
    else:
        errors.print(
            f"deposited {len(data)} bytes with a Dropbox on {info.nickname}: "
            f"{terms.get('fetches_left')} fetch(es), self-destructs in {args.expires:g} s; "
            "whoever holds this capability can fetch and read it (the box cannot):"
        )
        console.print(str(capability))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    capability = dropbox.Capability.parse(args.capability)
    page_key = _page_key(args) if args.page is not None else b""  # before a fetch is spent
    refuse_existing(args.out, force=args.force)  # before the fetch uses the deposit up

    async def run() -> bytes:
        async with Box(capability.onion, socks=args.socks) as box:
            return await dropbox.get(box, capability)

    data = asyncio.run(run())
    if args.page is not None:
        return _page(args, data, page_key)
    if args.out is not None:
        write_private(args.out, data, force=args.force)
    if args.json:
        emit_json({"bytes": len(data), "out": str(args.out) if args.out else None})
    elif args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        errors.print(f"fetched {len(data)} bytes into {args.out}")
    return 0


def _page_key(args: argparse.Namespace) -> bytes:
    from bento.functions.browser.wire import WireError, decode_key

    try:
        return decode_key(args.page_key)
    except WireError as exc:
        raise BentoError(
            f"--page needs the page's key: {exc}", fix="pass --page-key as `bento browse` printed it"
        ) from None


def _page(args: argparse.Namespace, data: bytes, key: bytes) -> int:
    from bento.functions.browser.via_dropbox import open_transfer

    page = open_transfer(data, args.page, key)
    if args.json:
        emit_json({"bytes": len(data), **page.as_json()})
    else:
        errors.print(
            f"fetched {len(data)} bytes: a page of {len(page.resources)} resource(s), "
            f"{page.archive_bytes} archive + {page.padding_bytes} padding"
        )
        console.print(str(page.main))
    return 0
