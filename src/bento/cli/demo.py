"""``bento demo``: the tour, on a testnet of its own."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bento.cli.demo_browser import Act, browser_act
from bento.cli.output import console, print_table, step, table
from bento.cli.testnet import print_status
from bento.client.box import Box
from bento.client.discovery import discover
from bento.errors import BentoError
from bento.protocol.manifest import Manifest
from bento.testnet import Testnet, TestnetConfig
from bento.testnet.site import LocalSite
from bento.testnet.trace import fetch_with_path

# The function the demo deploys: it greets, then shouts back every line it is sent.
SHOUT = """\
from bento.runtime import api


def shout(name):
    api.send(f"hello {name}, I am running on a Tor relay\\n")
    lines = 0
    while (line := api.recv()) is not None:
        api.send(line.upper())
        lines += 1
    return {"lines": lines}
"""


def add_demo(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=cmd_demo)


def say(text: str) -> None:
    console.print(f"\n[bold cyan]»[/bold cyan] {text}")


def cmd_demo(args: argparse.Namespace) -> int:
    say(
        "Bento runs on Tor. This demo starts a private Tor network made of real tor "
        "processes on this machine (127.0.0.1 only: no traffic leaves it), with a Bento "
        "server beside two of its relays."
    )
    with tempfile.TemporaryDirectory(prefix="bento-demo-") as tmp:
        config = TestnetConfig(directory=Path(tmp) / "testnet", bento_boxes=2, owner_pid=os.getpid())
        started = time.monotonic()
        with Testnet.start(config, progress=step) as net:
            say(
                f"The network is up after {time.monotonic() - started:.1f} s: 3 directory "
                "authorities vote on a consensus that lists 5 relays (3 of them exits); two exits "
                "run Bento; a Tor client has built circuits through them."
            )
            print_status(net.status())
            asyncio.run(tour(net))
        say("Stopping the network: every tor and Bento process it started is gone, its state removed.")
    console.print("\n[green]Demo finished.[/green]")
    return 0


async def tour(net: Testnet) -> Act:
    """Every act after the network is up (the tests run it on their own testnet)."""
    await _fetch_page(net)

    say(
        "Finding Bento boxes needs no central server: a box advertises `bento=<onion address>` "
        "in its relay's ContactInfo, which every Tor client already downloads."
    )
    boxes = await asyncio.to_thread(discover, net.control_address)
    rows = table(("nickname", "fingerprint", "onion address"))
    for found in boxes:
        rows.add_row(found.nickname, found.fingerprint, f"{found.onion}.onion")
    print_table(rows)
    info = boxes[0]

    async with Box(info.onion, socks=net.socks_address, info=info) as box:
        descriptor = await box.descriptor()
        say(
            f"We pick {info.nickname} and fetch its descriptor over Tor. It is signed by the key "
            f"behind {info.onion[:16]}….onion and names relay {descriptor.relay_fingerprint[:16]}…, "
            "the relay that advertised it: verified."
        )
        policy, isolation = descriptor.policy, descriptor.runtime.isolation
        say(
            f"Its node policy says what functions may do there: at most {policy.instance.memory_mb} MB "
            f"and {policy.instance.cpu_seconds} s of CPU each, {policy.instances_total} at once. Each runs "
            f"in its own sandbox ({isolation['namespaces']}; {isolation['syscalls']}; memory capped by "
            f"{isolation['memory']}), and reaches the network only through a broker bound by the "
            "relay's exit policy."
        )
        say("We upload this function, over Tor, to the box:")
        console.print(SHOUT, markup=False, highlight=False)
        deployment = await box.deploy(SHOUT.encode(), Manifest(name="shout"))
        say(
            f"The box answers with a function id ({deployment.function_id}) and two secret "
            "tokens: one to invoke the function, one to shut it down. It keeps only their hashes."
        )

        session_id = await box.invoke(deployment, "shout", ["newcomer"])
        say(f"We invoke shout('newcomer'): session {session_id}. We talk to it:")
        async with await box.attach(deployment, session_id) as stream:
            console.print(f"   [green]box says:[/green] {(await _line(stream)).rstrip()}")
            for line in ("bento boxes run code on relays", "every byte went over tor"):
                console.print(f"   [blue]we send:[/blue]  {line}")
                await stream.send(line + "\n")
                console.print(f"   [green]box says:[/green] {(await _line(stream)).rstrip()}")
            await stream.close_input()
            while await stream.receive() is not None:
                pass
        assert stream.ended is not None
        usage = stream.ended.usage
        say(
            f"The session ended ({stream.ended.state.value}) and returned {json.dumps(stream.ended.result)}, "
            f"having used {usage.cpu_seconds:.2f} s of CPU and {usage.peak_memory_bytes / 2**20:.0f} MiB "
            "of memory at its peak."
        )

        await box.shutdown(deployment)
        say("We shut the function down with its shutdown token: code, sessions and tokens are gone.")
        try:
            await box.invoke(deployment, "shout", ["again"])
        except BentoError as exc:
            console.print(f"   invoking it again: [red]{exc.message}[/red]")

    return await _browser(net)


async def _browser(net: Testnet) -> Act:
    say(
        "Bento ships standard functions. Browser defends against someone who watches your link "
        "to Tor: at an exit box it fetches a whole page with everything it needs, packs it, pads "
        "it to a multiple of a size you choose, and sends it back in one stream. The same page "
        "now, by plain Tor and by Browser with 1 MB padding:"
    )
    act = await browser_act(net, step)
    rows = table(("", "plain Tor", "Browser, 1 MB padding"))
    rows.add_row("resources", str(act.resources_plain), str(act.resources_browser))
    rows.add_row("seconds", f"{act.plain.seconds:.2f}", f"{act.browser.seconds:.2f}")
    if act.captured:
        rows.add_row("bytes up (link)", f"{act.plain.up:,}", f"{act.browser.up:,}")
        rows.add_row("bytes down (link)", f"{act.plain.down:,}", f"{act.browser.down:,}")
    else:
        rows.add_row("bytes read from SOCKS", f"{act.plain.down:,}", f"{act.browser.down:,}")
    print_table(rows)
    if lost := act.plain.dropped + act.browser.dropped:
        say(f"(This machine is busy: the capture lost {lost} packets, so those bytes are a lower bound.)")
    if act.captured:
        say(
            "Recorded on the user's links to Tor (the TLS records between her tor and the relays, "
            "as a watcher of her link sees them), over each fetch's time, up then down:"
        )
        for name, seen in (("plain Tor", act.plain), ("Browser", act.browser)):
            up, down = seen.timeline()
            console.print(f"   {name:<10} up   {up}\n   {'':<10} down {down}", markup=False)
        say(
            "Plain Tor's link shows the page's shape: requests and answers back and forth. "
            "Browser's shows a small upload, a pause while the box fetches "
            f"{act.site} ({act.page_bytes:,} bytes), then one long download padded with "
            f"{act.padding:,} random bytes to a multiple of 1 MB (what goes up meanwhile is Tor's "
            "flow control and the client's acknowledgements, in step with the download)."
        )
    else:
        say(
            "Not run as root with dumpcap, the demo cannot record the link; these are the bytes "
            "the client read through its SOCKS port (HTTP bodies for plain Tor; the archive and "
            f"its {act.padding:,} bytes of padding for Browser)."
        )
    return act


async def _line(stream: Any) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await asyncio.wait_for(stream.receive(), 120)
        if chunk is None:
            break
        data += chunk
    return data.decode()


async def _fetch_page(net: Testnet) -> None:
    page = b"<html><body><h1>Hello from 127.0.0.1</h1></body></html>"
    async with LocalSite({"/": page}) as site:
        say(
            f"First, plain Tor: a small web server listens on {site.url}; we fetch it through "
            f"the client's SOCKS port ({net.socks_address}), across relays, out of an exit."
        )
        body, path = await fetch_with_path(net.control_address, net.socks_address, site.url)
        if body != page:
            raise BentoError("the page came back altered")
        say(f"Fetched {len(body)} bytes over the circuit: {' -> '.join(['you', *path, site.url])}")
