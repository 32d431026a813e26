"""Managing the functions in the keyring: ``shutdown``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bento.cli import client_options
from bento.cli.output import console, emit_json
from bento.client.box import Box
from bento.client.keyring import Keyring


def add_shutdown(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", help="function id or name")
    client_options.add(parser)
    parser.set_defaults(handler=cmd_shutdown)


def cmd_shutdown(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    deployment = keyring.function(args.function)

    async def stop() -> Any:
        async with Box(deployment.onion, socks=args.socks) as box:
            return await box.shutdown(deployment)

    response = asyncio.run(stop())
    keyring.forget(deployment.function_id)
    keyring.save()
    if args.json:
        emit_json(response.model_dump(mode="json"))
    else:
        console.print(
            f"{deployment.name} ({deployment.function_id}) shut down; "
            f"{response.sessions_stopped} running session(s) stopped; its tokens are void"
        )
    return 0
