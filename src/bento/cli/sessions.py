"""``bento sessions``: a function's sessions, how each ended and what it used."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bento.cli import client_options
from bento.cli.output import emit_json, print_table, table
from bento.client.box import Box
from bento.client.keyring import Keyring


def add_sessions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", help="function id or name")
    client_options.add(parser, wide=True)
    parser.set_defaults(handler=cmd_sessions)


def cmd_sessions(args: argparse.Namespace) -> int:
    deployment = Keyring(args.keyring).function(args.function)

    async def fetch() -> Any:
        async with Box(deployment.onion, socks=args.socks) as box:
            return await box.sessions(deployment)

    listing = asyncio.run(fetch())
    if args.json:
        emit_json(listing.model_dump(mode="json"))
        return 0
    rows = table(
        ("session", "entry", "state", "cause", "reason", "attached", "out", "in", "buffered", "cpu s", "MiB"),
        title=f"sessions of {deployment.name} ({deployment.function_id})",
        wide=args.wide,
    )
    for s in listing.sessions:
        rows.add_row(
            s.session_id,
            s.entry,
            s.state.value,
            s.cause.value if s.cause else "-",
            s.reason or "-",
            "yes" if s.attached else "no",
            str(s.bytes_out),
            str(s.bytes_in),
            str(s.buffered),
            f"{s.usage.cpu_seconds:.2f}",
            f"{s.usage.peak_memory_bytes / 2**20:.1f}",
        )
    print_table(rows, wide=args.wide)
    return 0
