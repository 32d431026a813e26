"""Entry point of the ``bento`` command: argument parsing and error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bento import __version__
from bento.cli import demo, functions, server, testnet
from bento.cli.output import fail
from bento.errors import BentoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bento",
        description="Bento: programmable middleboxes for Tor.",
    )
    parser.add_argument("--version", action="version", version=f"bento {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(commands)
    functions.register(commands)
    server.register(commands)
    testnet.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except BentoError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
