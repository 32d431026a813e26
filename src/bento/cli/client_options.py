"""Options every client command shares: where the Tor client and the keyring are."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def default_socks() -> str:
    return os.environ.get("BENTO_SOCKS", "127.0.0.1:9050")


def add(parser: argparse.ArgumentParser, *, control: bool = False, wide: bool = False) -> None:
    parser.add_argument(
        "--socks",
        default=default_socks(),
        help="the Tor client's SOCKS port (default: $BENTO_SOCKS or 127.0.0.1:9050)",
    )
    if control:
        parser.add_argument(
            "--control",
            default=os.environ.get("BENTO_CONTROL", "127.0.0.1:9051"),
            help="the Tor client's control port (default: $BENTO_CONTROL or 127.0.0.1:9051)",
        )
    parser.add_argument(
        "--keyring", type=Path, default=None, help="the token keyring (default: $BENTO_KEYRING)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts (errors too)")
    if wide:
        parser.add_argument(
            "--wide", action="store_true", help="keep each table row on one line (long ids are not wrapped)"
        )
