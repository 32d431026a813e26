"""``bento tokens``: rights to a function to keep or hand out: single-use and unlinkable
(blinded), or narrowed to some entry points, uses, a time and arguments (``tokens narrow``)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

from bento.cli import client_options
from bento.cli.dropbox import parse_duration
from bento.cli.output import console, emit_json, errors

NARROW = "narrow"


def add_tokens(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "bento tokens FUNCTION [--right RIGHT] [--count N]\n"
        "       bento tokens narrow FUNCTION [--entry NAME] [--uses N] [--until DURATION] [--arg JSON]"
    )
    parser.description = (
        "Ask the function's box for blinded tokens (RFC 9474 blind signatures): each is good for "
        "one invocation (or one shutdown), and the box cannot tell which request it came from. "
        "Each is printed as a capability, bento:RIGHT:ONION:FUNCTION:TOKEN, that its holder "
        "passes to `bento invoke` (or `bento shutdown`) in place of the function's name. "
        "`bento tokens narrow FUNCTION` instead derives, offline, one invocation capability that "
        "allows only what its options say (each left out stays as the token had it); FUNCTION may "
        "be a capability itself, to narrow it further. A narrowed token is never widened, never "
        "shuts the function down, and reaches no session it did not open."
    )
    parser.add_argument("function", help="function id, or its name if unique in the keyring (or: narrow)")
    parser.add_argument("narrowed", nargs="?", metavar="FUNCTION", help=argparse.SUPPRESS)
    parser.add_argument("--right", choices=["invoke", "shutdown"], default="invoke", help="default: invoke")
    parser.add_argument("--count", type=int, default=1, help="how many (default 1; at most 1000)")
    narrowing = parser.add_argument_group("narrow")
    narrowing.add_argument(
        "--entry", action="append", metavar="NAME", help="an entry point it may invoke (repeat)"
    )
    narrowing.add_argument("--uses", type=int, help="how many invocations it allows in all")
    narrowing.add_argument("--until", type=parse_duration, metavar="DURATION",
                           help="how long it is good for, from now (90s, 30m, 12h, 7d)")  # fmt: skip
    narrowing.add_argument("--arg", action="append", metavar="JSON",
                           help="the invocation's positional arguments, exactly (repeat; JSON)")  # fmt: skip
    client_options.add(parser)
    parser.set_defaults(handler=cmd_tokens)


def cmd_tokens(args: argparse.Namespace) -> int:
    from bento.errors import BentoError

    if args.function == NARROW and args.narrowed is not None:
        return cmd_narrow(args)
    if args.narrowed is not None:
        raise BentoError(
            f"unexpected {args.narrowed!r}", fix="bento tokens FUNCTION, or bento tokens narrow FUNCTION"
        )
    if args.entry or args.uses is not None or args.until is not None or args.arg:
        raise BentoError(
            "--entry, --uses, --until and --arg narrow a token", fix="bento tokens narrow FUNCTION ..."
        )
    from bento.client import blind_tokens
    from bento.client.box import Box
    from bento.client.capability import Capability
    from bento.client.keyring import Keyring

    if not 1 <= args.count <= 1000:
        raise BentoError("--count must be between 1 and 1000")
    keyring = Keyring(args.keyring)
    deployment = keyring.function(args.function)

    async def obtain() -> list[str]:
        async with Box(deployment.onion, socks=args.socks, nickname=deployment.relay_nickname) as box:
            return await blind_tokens.obtain(box, deployment, args.right, args.count)

    tokens = asyncio.run(obtain())
    keyring.record_token_keys(deployment)  # the key id it now knows for this right (key consistency)
    caps = [Capability(args.right, deployment.onion, deployment.function_id, t).encode() for t in tokens]
    if args.json:
        emit_json({"right": args.right, "key_id": deployment.token_keys[args.right], "capabilities": caps})
        return 0
    errors.print(
        f"[dim]{len(caps)} single-use {args.right} capabilit{'y' if len(caps) == 1 else 'ies'} for "
        f"{deployment.name}; whoever holds one can use it once: keep them secret[/dim]"
    )
    for cap in caps:
        console.print(cap, soft_wrap=True)
    return 0


def cmd_narrow(args: argparse.Namespace) -> int:
    """One capability that carries only the narrowed token (offline: no box is asked)."""
    from bento.cli import arguments
    from bento.client.capability import Capability, resolve
    from bento.client.keyring import Keyring
    from bento.client.narrowing import narrow
    from bento.errors import BentoError

    if args.count != 1 or args.right != "invoke":
        raise BentoError("a narrowed token is one invocation right", fix="leave out --count and --right")
    deployment, _ = resolve(args.narrowed, Keyring(args.keyring))
    if not deployment.invocation_token:
        raise BentoError("that capability holds no invocation right to narrow")
    until = datetime.now(UTC) + timedelta(seconds=args.until) if args.until is not None else None
    positional = arguments.parse(args.arg, [], strings=False)[0] if args.arg is not None else None
    token = narrow(
        deployment.invocation_token, entries=args.entry, uses=args.uses, until=until, args=positional
    )
    capability = Capability("invoke", deployment.onion, deployment.function_id, token).encode()
    if args.json:
        emit_json({"capability": capability, "until": until.isoformat() if until else None})
        return 0
    allowed = [
        f"entry points {', '.join(args.entry)}" if args.entry else "",
        f"{args.uses} use{'s' * (args.uses != 1)}" if args.uses is not None else "",
        f"until {until:%Y-%m-%d %H:%M:%S} UTC" if until else "",
        f"arguments {' '.join(args.arg)}" if args.arg is not None else "",
    ]
    errors.print(
        f"[dim]a narrowed invocation capability for {deployment.name} ("
        + "; ".join(a for a in allowed if a)
        + "): whoever holds it can invoke within that, and narrow it further[/dim]"
    )
    console.print(capability, soft_wrap=True)
    return 0
