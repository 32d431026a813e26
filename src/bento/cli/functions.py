"""The functions in the keyring: ``functions`` (with a reachability check), ``forget``, ``shutdown``."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict

from bento.cli import client_options
from bento.cli.output import console, emit_json, print_table, table
from bento.client import capability
from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError, Refused, TransportError
from bento.protocol.errors import ErrorCode

CHECK_TIMEOUT = 30.0  # seconds for every box to answer; an onion service can take a while


def add_functions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offline", action="store_true", help="only list the keyring; do not ask the boxes (no Tor)"
    )
    parser.add_argument(
        "--timeout", type=float, default=CHECK_TIMEOUT,
        help=f"seconds to wait for the boxes' answers (default {CHECK_TIMEOUT:.0f})",
    )  # fmt: skip
    client_options.add(parser, wide=True)
    parser.set_defaults(handler=cmd_functions)


def add_forget(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Drop functions' tokens from the keyring. A function whose box still answers is refused: "
        "without its tokens nothing could stop it (`bento shutdown` it instead, or --force)."
    )
    parser.add_argument("functions", nargs="+", metavar="FUNCTION", help="function id or name")
    parser.add_argument(
        "--force", action="store_true", help="forget even a function whose box still runs it (no Tor asked)"
    )
    parser.add_argument(
        "--timeout", type=float, default=CHECK_TIMEOUT,
        help=f"seconds to wait for the boxes to say if they run them (default {CHECK_TIMEOUT:.0f})",
    )  # fmt: skip
    client_options.add(parser)
    parser.set_defaults(handler=cmd_forget)


def add_shutdown(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", help="function id or name, or a shutdown capability (bento tokens)")
    client_options.add(parser)
    parser.set_defaults(handler=cmd_shutdown)


# --- functions --------------------------------------------------------------------------


async def check(deployments: list[Deployment], socks: str, within: float) -> dict[str, tuple[str, str]]:
    """For each function id, ``(status, detail)``: ``up`` (its box lists its sessions),
    ``gone`` (its box answers that it has no such function: shut down, or the box
    restarted), ``refused`` (its box refuses the token), ``unreachable`` (no answer within
    ``within`` seconds) or ``error``. One connection per box, all at once."""
    by_box: dict[str, list[Deployment]] = defaultdict(list)
    for deployment in deployments:
        by_box[deployment.onion].append(deployment)
    found: dict[str, tuple[str, str]] = {}

    async def ask(box: Box, deployment: Deployment) -> None:
        try:
            listing = await box.sessions(deployment)
        except TransportError as exc:
            found[deployment.function_id] = ("unreachable", exc.message)
            return
        except Refused as exc:  # the box answered: it no longer has the function, or refuses it
            gone = exc.code == ErrorCode.UNKNOWN_FUNCTION
            found[deployment.function_id] = ("gone" if gone else "refused", exc.message)
            return
        except BentoError as exc:
            found[deployment.function_id] = ("error", exc.message)
            return
        running = sum(s.state.value == "running" for s in listing.sessions)
        found[deployment.function_id] = ("up", f"{len(listing.sessions)} session(s), {running} running")

    async def ask_box(onion: str, on_box: list[Deployment]) -> None:
        async with Box(onion, socks=socks, nickname=on_box[0].relay_nickname) as box:
            await asyncio.gather(*(ask(box, d) for d in on_box))

    try:
        async with asyncio.timeout(within):
            await asyncio.gather(*(ask_box(onion, on_box) for onion, on_box in by_box.items()))
    except TimeoutError:
        pass  # those that did not answer in time are unreachable
    for deployment in deployments:
        found.setdefault(deployment.function_id, ("unreachable", f"no answer within {within:.0f} s"))
    return found


def cmd_functions(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    deployments = sorted(keyring.functions.values(), key=lambda d: d.deployed_at)
    if args.offline or not deployments:
        status = {d.function_id: ("unchecked", "") for d in deployments}
    else:
        status = asyncio.run(check(deployments, args.socks, args.timeout))
    if args.json:
        emit_json(
            [
                {
                    "function_id": d.function_id,
                    "name": d.name,
                    "box": d.box,
                    "address": d.address,
                    "onion": d.onion,
                    "relay_fingerprint": d.relay_fingerprint,
                    "deployed_at": d.deployed_at,
                    "entry_points": d.entry_points,
                    "status": status[d.function_id][0],
                    "detail": status[d.function_id][1],
                }
                for d in deployments
            ]
        )
        return 0
    rows = table(
        ("name", "function", "box", "onion address", "deployed", "status"),
        title=f"{len(deployments)} function(s) in {keyring.path}",
        wide=args.wide,
    )
    colours = {"up": "green", "gone": "red", "refused": "red", "error": "red", "unreachable": "yellow"}
    colours["unchecked"] = "dim"
    for d in deployments:
        state, detail = status[d.function_id]
        shown = f"[{colours[state]}]{state}[/{colours[state]}]" + (f": {detail}" if detail else "")
        deployed = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.deployed_at))
        rows.add_row(d.name, d.function_id, d.box, f"{d.onion}.onion", deployed, shown)
    print_table(rows, wide=args.wide)
    if any(s == "gone" for s, _ in status.values()):
        console.print("[dim]a gone function's tokens are useless: `bento forget FUNCTION` drops them[/dim]")
    return 0


# --- forget and shutdown ----------------------------------------------------------------


def cmd_forget(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    chosen = [keyring.function(name) for name in args.functions]  # every name checked before any change
    if not args.force:
        status = asyncio.run(check(chosen, args.socks, args.timeout))
        live = [d for d in chosen if status[d.function_id][0] == "up"]
        if live:
            listed = ", ".join(f"{d.address} ({d.function_id})" for d in live)
            raise BentoError(
                f"still running on its box: {listed}; without its tokens nothing could stop it or reach "
                "its storage, so nothing was forgotten",
                fix=f"`bento shutdown {live[0].function_id}` stops it and deletes it from its box and the "
                "keyring; `bento forget --force` forgets it anyway",
            )
    forgotten = [d for d in chosen if keyring.forget(d.function_id) is not None]
    if args.json:
        emit_json({"forgotten": [d.function_id for d in forgotten], "keyring": str(keyring.path)})
    for d in forgotten if not args.json else []:
        console.print(f"forgot {d.address} ({d.function_id}): its tokens are deleted")
    return 0


async def shut_down(deployment: Deployment, socks: str) -> int:
    """Shut ``deployment`` down on its box; the number of sessions that were stopped."""
    async with Box(deployment.onion, socks=socks, nickname=deployment.relay_nickname) as box:
        return (await box.shutdown(deployment)).sessions_stopped


def cmd_shutdown(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    deployment, _ = capability.resolve(args.function, keyring)
    stopped = asyncio.run(shut_down(deployment, args.socks))
    keyring.forget(deployment.function_id, how="shut down")
    if args.json:
        emit_json({"function_id": deployment.function_id, "sessions_stopped": stopped})
    else:
        console.print(
            f"{deployment.address} ({deployment.function_id}) shut down; "
            f"{stopped} running session(s) stopped; its tokens are void"
        )
    return 0
