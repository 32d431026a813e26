"""``bento loadbalance SERVICE.py --box LB --boxes B1,B2 --min 1 --max N``.

Starts a LoadBalancer on ``--box`` that publishes the service's onion address and runs
replicas of ``SERVICE.py`` (a module with ``handle(conn)``) on the ``--boxes``, then
prints its address and follows it: replicas up, lost, stopped, scaling. Ctrl-C (or
``--detach``) leaves it running on its box until its session ends (the box's wall-clock
limit) or ``bento shutdown`` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bento.cli import client_options
from bento.cli.files import write_private
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.discovery import discover, resolve
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.loadbalancer import client as lb
from bento.functions.loadbalancer.policy import MAX_REPLICAS, Settings
from bento.tor.client_auth import ClientKey


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{value} replicas: give 1 to {MAX_REPLICAS}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{value:g} s: give more than 0 and at most 86400")
    return value


def add_loadbalance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", type=Path, help="the service: a .py file with handle(conn)")
    parser.add_argument("--box", required=True, help="the box that runs the LoadBalancer (holds the address)")
    parser.add_argument("--boxes", required=True, help="boxes for replicas, comma-separated, preferred first")
    parser.add_argument("--min", type=_count, default=1, help="replicas at least (default 1)")
    parser.add_argument(
        "--max", type=_count, default=4, help=f"replicas at most (default 4, at most {MAX_REPLICAS})"
    )
    parser.add_argument(
        "--high",
        type=float,
        default=2.0,
        help="add a replica above this many live connections per replica (default 2)",
    )
    parser.add_argument("--low", type=float, default=0.5,
                        help="remove one below this many (default 0.5)")  # fmt: skip
    parser.add_argument(
        "--up-after", type=_seconds, default=5.0, help="seconds above --high first (default 5)"
    )
    parser.add_argument(
        "--down-after", type=_seconds, default=30.0, help="seconds below --low first (default 30)"
    )
    parser.add_argument("--entry", default="handle", help="the service's handler (default handle)")
    parser.add_argument("--concurrency", type=int, default=4, choices=range(1, 65), metavar="N",
                        help="connections one replica handles at once (default 4)")  # fmt: skip
    parser.add_argument("--idle-timeout", type=_seconds, default=60.0,
                        help="close a connection silent both ways this long (default 60 s)")  # fmt: skip
    parser.add_argument("--start-timeout", type=_seconds, default=180.0,
                        help="give up on a replica not serving after this long (default 180 s)")  # fmt: skip
    parser.add_argument("--lifetime", type=int, default=3600,
                        help="seconds the service runs (capped by the boxes' wall-clock limit)")  # fmt: skip
    parser.add_argument(
        "--client-auth", type=Path, metavar="FILE",
        help="only the client holding FILE's key may reach the service (Tor client authorization): "
        "FILE is made (an .auth_private line for your tor's ClientOnionAuthDir), or reused if it exists",
    )  # fmt: skip
    parser.add_argument("--detach", action="store_true", help="print the address and return")
    client_options.add(parser, control=True)
    parser.set_defaults(handler=cmd_loadbalance)


def cmd_loadbalance(args: argparse.Namespace) -> int:
    if args.min > args.max:
        raise BentoError(f"--min {args.min} is more than --max {args.max}")
    if not 0 <= args.low < args.high:
        raise BentoError(f"need 0 <= --low < --high (got {args.low:g} and {args.high:g})")
    lb.replica_code(args.service, args.entry)  # a bad service file is refused before any network
    settings = Settings(
        args.min, args.max, args.high, args.low, args.up_after, args.down_after, args.start_timeout
    )
    known = discover(args.control)
    box = resolve(args.box, known)
    names = [n.strip() for n in args.boxes.split(",") if n.strip()]
    if not names:
        raise BentoError(
            "--boxes names no box", fix="give nicknames, fingerprints or onion addresses: exit0,exit1"
        )
    replicas = [resolve(n, known) for n in names]
    keyring = Keyring(args.keyring)
    client_key = _client_key(args.client_auth) if args.client_auth else None

    async def run() -> int:
        async with Box(box.onion, socks=args.socks, info=box) as client:
            async with asyncio.timeout(args.start_timeout + 120):
                function, stream, address = await lb.start(
                    client, keyring, args.service, settings, [r.onion for r in replicas],
                    entry=args.entry, concurrency=args.concurrency, idle_seconds=args.idle_timeout,
                    lifetime=args.lifetime, client_auth=client_key.public if client_key else None,
                )  # fmt: skip
            if client_key is not None:
                _keep_client_key(args.client_auth, client_key, address)
            summary = {"address": address, "box": box.nickname, "function": function.name,
                       "session": stream.session_id, "boxes": [r.nickname for r in replicas],
                       "client_auth": str(args.client_auth) if args.client_auth else None}  # fmt: skip
            try:
                if args.json:
                    emit_json(summary)
                else:
                    errors.print(
                        f"LoadBalancer on {box.nickname} (session {stream.session_id}); the service:"
                    )
                    console.print(address)
                    if args.client_auth:
                        who = f"only a tor with {args.client_auth} in its ClientOnionAuthDir"
                        errors.print(f"[dim]{who} reaches it[/dim]")
                if args.detach:
                    return 0
                nick = {r.onion: r.nickname for r in replicas}
                async for event in lb.events(stream):
                    _show(event, nick, as_json=args.json)
            finally:
                await stream.close()
        return 0

    try:
        return asyncio.run(run())
    except TimeoutError:
        raise BentoError(
            f"the LoadBalancer did not publish its address within {args.start_timeout + 120:g} s"
        ) from None


def _show(event: dict[str, Any], nick: dict[str, str], *, as_json: bool) -> None:
    if as_json:  # one object a line after the summary: a stream a script can follow
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
        return
    where = nick.get(str(event.get("box", "")), str(event.get("box", ""))[:16])
    kind = event.get("event")
    if kind == "up":
        errors.print(f"replica {event.get('replica')} up on {where} at {event.get('address')}")
    elif kind == "lost":
        errors.print(f"replica {event.get('replica')} on {where} lost: {event.get('why')}")
    elif kind == "stopped":
        errors.print(f"replica {event.get('replica')} on {where} stopped ({event.get('why')})")
    elif kind == "scale":
        errors.print(f"replicas wanted: {event.get('desired')} (load {event.get('load')} per replica)")
    else:
        errors.print(str(event))


def _client_key(path: Path) -> ClientKey:
    """The key in ``path`` (an ``.auth_private`` file made before), or a new one."""
    try:
        return ClientKey.parse(path.read_text())[0]
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise BentoError(f"cannot make {path}: no directory {path.parent}") from None
        return ClientKey.new()
    except (OSError, ValueError) as exc:
        raise BentoError(
            f"{path} is not a client authorization file: {exc}",
            fix="give a new file name (it is made), or one an earlier --client-auth made",
        ) from None


def _keep_client_key(path: Path, key: ClientKey, address: str) -> None:
    """Write the key's ``.auth_private`` line for ``address``, unless ``path`` holds it already."""
    line = key.line(address)
    if path.exists():
        if path.read_text().strip() != line:
            errors.print(
                f"[yellow]warning[/yellow]: {path} names another address; the service is {address}: "
                "your tor needs a file with its line"
            )
        return
    write_private(path, (line + "\n").encode(), force=False)
