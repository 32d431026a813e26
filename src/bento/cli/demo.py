"""``bento demo``: the tour, on a testnet of its own."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bento.cli.output import console, step
from bento.cli.testnet import print_status
from bento.tor.testnet import Testnet, TestnetConfig
from bento.tor.testnet.site import LocalSite
from bento.tor.testnet.trace import fetch_with_path


def register(commands: Any) -> None:
    parser = commands.add_parser("demo", help="a guided tour of Bento on a private Tor network")
    parser.set_defaults(handler=cmd_demo)


def say(text: str) -> None:
    console.print(f"\n[bold cyan]»[/bold cyan] {text}")


def cmd_demo(args: argparse.Namespace) -> int:
    say(
        "Bento runs on Tor. This demo starts a private Tor network made of real tor "
        "processes on this machine (127.0.0.1 only: no traffic leaves it)."
    )
    with tempfile.TemporaryDirectory(prefix="bento-demo-") as tmp:
        config = TestnetConfig(directory=Path(tmp) / "testnet", owner_pid=os.getpid())
        started = time.monotonic()
        with Testnet.start(config, progress=step) as net:
            say(
                f"The network is up after {time.monotonic() - started:.1f} s: 3 directory "
                "authorities vote on a consensus that lists 5 relays (3 of them exits), and a "
                "Tor client has built a circuit through them."
            )
            print_status(net.status())
            asyncio.run(_fetch_page(net))
        say("Stopping the network: every tor process it started is gone, and its state removed.")
    console.print("\n[green]Demo finished.[/green]")
    return 0


async def _fetch_page(net: Testnet) -> None:
    page = b"<html><body><h1>Hello from 127.0.0.1</h1></body></html>"
    async with LocalSite({"/": page}) as site:
        say(
            f"A small web server is listening on {site.url}. We fetch it through the client's "
            f"SOCKS port ({net.socks_address}), so the request crosses three relays and leaves "
            "Tor at an exit."
        )
        body, path = await fetch_with_path(net.control_address, net.socks_address, site.url)
        hops = " -> ".join(["you", *path, f"{site.url}"])
        say(f"Fetched {len(body)} bytes over this circuit: {hops}")
        if body != page:
            raise RuntimeError("the page came back altered")
        console.print(f"   [dim]{body.decode()}[/dim]")
