"""``bento cover circuits --box B --circuits N --rate R --duration S``: circuit cover.

Deploys Cover to the box (or reuses the deployment of the same code in the keyring), which
builds N circuits in the box's Tor for functions and keeps each at R cells per second for
S seconds, into a sink of its own; prints what each circuit carried. Link cover, the
session's own stream at a constant rate, is ``--cover RATE`` on ``bento browse`` and
``bento invoke``.
"""

from __future__ import annotations

import argparse
import asyncio

from rich.progress import BarColumn, Progress, TimeElapsedColumn

from bento.cli import client_options
from bento.cli.boxes import find_box
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.functions.cover import client as cover
from bento.protocol.cover import CELL_BYTES, parse_rate


def _rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_cover(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="cover_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "circuits", help="keep circuits of a box busy at a constant rate, into a sink of the box's own"
    )
    run.add_argument("--box", required=True, help="the box: nickname, fingerprint or onion address")
    run.add_argument("--circuits", type=int, default=3, metavar="N", help="circuits to build (default 3)")
    run.add_argument(
        "--rate", type=_rate, default=50, metavar="RATE",
        help="cells per second on each circuit (a cell is 514 bytes), or bytes, e.g. 25KB/s (default 50)",
    )  # fmt: skip
    run.add_argument("--duration", type=float, default=10.0, metavar="S", help="seconds (default 10)")
    client_options.add(run, control=True)
    run.set_defaults(handler=cmd_circuits)


def cmd_circuits(args: argparse.Namespace) -> int:
    info = find_box(args)
    keyring = Keyring(args.keyring)

    async def run() -> dict[str, object]:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            TimeElapsedColumn(),
            console=errors,
            disable=args.json,
            transient=True,
        ) as bar:
            task = bar.add_task(f"Cover on {info.nickname}", total=args.duration)
            async with Box(info.onion, socks=args.socks, info=info) as box:
                return await cover.circuits(
                    box,
                    keyring,
                    args.circuits,
                    args.rate,
                    args.duration,
                    progress=lambda seconds, sent: bar.update(task, completed=seconds),
                )

    result = asyncio.run(run())
    if args.json:
        emit_json(result)
        return 0
    circuits = result["circuits"]
    assert isinstance(circuits, list)
    console.print(
        f"{len(circuits)} circuits from {info.nickname} at {args.rate} cells/s each "
        f"({args.rate * CELL_BYTES / 1000:.0f} KB/s) for {result['seconds']} s:"
    )
    for circuit in circuits:
        path = " > ".join(fingerprint[:8] for fingerprint in circuit["path"])
        console.print(
            f"  {path}: {circuit['bytes_sent']} bytes sent, {circuit['bytes_received']} at the sink "
            f"({circuit['cells_per_second']} cells/s)"
        )
    return 0
