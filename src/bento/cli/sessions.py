"""``bento sessions`` and ``bento kill``: a function's sessions, how each ended, what it used."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bento.cli import client_options
from bento.cli.output import console, emit_json, print_table, table
from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.protocol.messages import SessionInfo

KILLED_BY_CLIENT = "killed by its client"  # the reason the box gives


def add_sessions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", help="function id or name")
    client_options.add(parser, wide=True)
    parser.set_defaults(handler=cmd_sessions)


def cmd_sessions(args: argparse.Namespace) -> int:
    deployment = Keyring(args.keyring).function(args.function)

    async def fetch() -> Any:
        async with Box(deployment.onion, socks=args.socks, nickname=deployment.relay_nickname) as box:
            return await box.sessions(deployment)

    listing = asyncio.run(fetch())
    if args.json:
        emit_json(listing.model_dump(mode="json"))
        return 0
    rows = table(
        (
            "session",
            "entry",
            "state",
            "cause",
            "reason",
            "attached",
            "out",
            "in",
            "buffered",
            "cpu s",
            "MiB",
            "held",
        ),
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
            _held(s.usage.held, s.usage.budgets),
        )
    print_table(rows, wide=args.wide)
    return 0


def _held(held: dict[str, int], budgets: dict[str, int]) -> str:
    """What the function holds of its budgets, e.g. ``circuits 2/8, streams 5/256``; "-" if nothing."""
    used = [f"{name} {count}/{budgets.get(name, '?')}" for name, count in sorted(held.items()) if count]
    return ", ".join(used) or "-"


def add_kill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", help="session id (as `bento invoke` printed it)")
    client_options.add(parser)
    parser.set_defaults(handler=cmd_kill)


def cmd_kill(args: argparse.Namespace) -> int:
    deployment = Keyring(args.keyring).function_of_session(args.session)

    async def kill() -> SessionInfo:
        async with Box(deployment.onion, socks=args.socks, nickname=deployment.relay_nickname) as box:
            return await box.kill(deployment, args.session)

    info = asyncio.run(kill())
    if args.json:
        emit_json(info.model_dump(mode="json"))
    elif info.reason == KILLED_BY_CLIENT:
        console.print(f"session {info.session_id} of {deployment.name} killed; its output stays retained")
    else:
        console.print(
            f"session {info.session_id} had already ended: {info.state.value} "
            f"({info.cause.value if info.cause else '-'}) {info.reason}".rstrip()
        )
    return 0
