"""The link-cover options of ``bento browse`` and ``bento invoke`` (see docs/cli.md, "Link cover")."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bento.protocol.cover import MAX_BURST, MAX_LEAD, parse_rate

if TYPE_CHECKING:
    from bento.client.cover import Cover

FRAMES_PER_SECOND = 100  # the automatic burst keeps frames at most this often (each 10 ms or more)


def _rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be 0 or more")
    return value


def add(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("link cover", "keep the session's stream at a constant cell rate")
    group.add_argument(
        "--cover", type=_rate, metavar="RATE",
        help="cells per second each way (a cell is 514 bytes on your link), e.g. 500; or bytes, e.g. 250KB/s",
    )  # fmt: skip
    group.add_argument(
        "--cover-burst", type=int, metavar="CELLS",
        help=f"cells per frame, 1 to {MAX_BURST} (default: enough for {FRAMES_PER_SECOND} frames a second)",
    )  # fmt: skip
    group.add_argument(
        "--cover-lead", type=_seconds, default=1.0, metavar="S",
        help=f"seconds of cover before the request goes (default 1, at most {MAX_LEAD:g})",
    )  # fmt: skip
    group.add_argument(
        "--cover-window", type=_seconds, default=0.0, metavar="S",
        help="the least length of the cover, from its start: a session that ends sooner hides its end in it",
    )  # fmt: skip
    group.add_argument(
        "--cover-tail", type=_seconds, default=1.0, metavar="S",
        help="the least cover after the session is over (default 1)",
    )  # fmt: skip


def from_args(args: argparse.Namespace) -> Cover | None:
    """The cover the options ask for; None without ``--cover``."""
    if args.cover is None:
        return None
    from bento.client.cover import Cover  # only with --cover: it is slow to import

    burst = args.cover_burst or min(MAX_BURST, max(1, args.cover // FRAMES_PER_SECOND))
    return Cover(
        rate=args.cover, burst=burst, lead=args.cover_lead, duration=args.cover_window, tail=args.cover_tail
    )
