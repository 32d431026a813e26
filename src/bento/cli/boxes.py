"""``bento boxes`` and ``bento descriptor``: finding boxes and checking what they promise."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bento.cli import client_options
from bento.cli.manifests import read_manifest
from bento.cli.output import console, emit_json, errors, print_table, table
from bento.client.box import Box
from bento.client.discovery import BoxInfo, discover, resolve
from bento.errors import BentoError
from bento.protocol.manifest import Manifest
from bento.protocol.policy import violations


def add_boxes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fits", type=Path, metavar="MANIFEST",
        help="only boxes whose policy admits this manifest (fetches each descriptor over Tor)",
    )  # fmt: skip
    client_options.add(parser, control=True, wide=True)
    parser.set_defaults(handler=cmd_boxes)


def add_descriptor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("box", help="nickname, fingerprint or onion address")
    client_options.add(parser, control=True)
    parser.set_defaults(handler=cmd_descriptor)


def cmd_boxes(args: argparse.Namespace) -> int:
    boxes = discover(args.control)
    if args.fits is not None:
        boxes = asyncio.run(_fitting(boxes, read_manifest(args.fits, {}), args.socks))
    if args.json:
        emit_json([b.as_json() for b in boxes])
        return 0
    rows = table(
        ("nickname", "fingerprint", "flags", "onion address"),
        title=f"{len(boxes)} Bento box(es) in the consensus",
        wide=args.wide,
    )
    for box in boxes:
        flags = " ".join(f for f in box.flags if f in ("Exit", "Guard", "HSDir", "Stable", "Fast"))
        rows.add_row(box.nickname, box.fingerprint, flags, f"{box.onion}.onion")
    print_table(rows, wide=args.wide)
    return 0


async def _fitting(boxes: list[BoxInfo], manifest: Manifest, socks: str) -> list[BoxInfo]:
    """The boxes whose verified descriptor admits ``manifest``; the others are reported."""

    async def check(info: BoxInfo) -> BoxInfo | None:
        try:
            async with Box(info.onion, socks=socks, info=info) as box:
                problems = violations(manifest.needs, (await box.descriptor()).policy)
        except BentoError as exc:
            errors.print(f"[yellow]{info.nickname}[/yellow]: skipped ({exc.message})")
            return None
        if problems:
            errors.print(f"[dim]{info.nickname}: does not fit: {'; '.join(problems)}[/dim]")
            return None
        return info

    results = await asyncio.gather(*(check(b) for b in boxes))
    return [b for b in results if b is not None]


def find_box(args: argparse.Namespace) -> BoxInfo:
    """The box ``args.box`` names, looked up in the consensus of ``args.control``."""
    return resolve(args.box, discover(args.control))


def cmd_descriptor(args: argparse.Namespace) -> int:
    info = find_box(args)

    async def fetch() -> dict[str, Any]:
        async with Box(info.onion, socks=args.socks, info=info) as box:
            return (await box.descriptor()).model_dump(mode="json")

    descriptor = asyncio.run(fetch())
    if args.json:
        emit_json(descriptor)
    else:
        console.print(
            f"[green]verified[/green]: signed by {info.onion}.onion, advertised by relay "
            f"{info.nickname} ({info.fingerprint})"
        )
        console.print_json(json.dumps(descriptor))
    return 0
