"""``bento tokens``: single-use, unlinkable rights to a function, to keep or hand out."""

from __future__ import annotations

import argparse
import asyncio

from bento.cli import client_options
from bento.cli.output import console, emit_json, errors


def add_tokens(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Ask the function's box for blinded tokens (RFC 9474 blind signatures): each is good for "
        "one invocation (or one shutdown), and the box cannot tell which request it came from. "
        "Each is printed as a capability, bento:RIGHT:ONION:FUNCTION:TOKEN, that its holder "
        "passes to `bento invoke` (or `bento shutdown`) in place of the function's name."
    )
    parser.add_argument("function", help="function id, or its name if unique in the keyring")
    parser.add_argument("--right", choices=["invoke", "shutdown"], default="invoke", help="default: invoke")
    parser.add_argument("--count", type=int, default=1, help="how many (default 1; at most 1000)")
    client_options.add(parser)
    parser.set_defaults(handler=cmd_tokens)


def cmd_tokens(args: argparse.Namespace) -> int:
    from bento.client import blind_tokens
    from bento.client.box import Box
    from bento.client.capability import Capability
    from bento.client.keyring import Keyring
    from bento.errors import BentoError

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
