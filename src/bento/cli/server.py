"""``bento server``: run a Bento box beside a relay."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from bento.errors import BentoError
from bento.server import journal
from bento.server.config import ServerConfig
from bento.server.daemon import BentoServer


def add_server(parser: argparse.ArgumentParser) -> None:
    parser.description = "Attach to a relay's control port and serve the Bento API as an onion service."
    parser.add_argument("--config", type=Path, help="TOML config file (see docs/operator.md)")
    parser.add_argument("--control", help="the relay's control port, host:port (default 127.0.0.1:9051)")
    parser.add_argument("--state-dir", type=Path, help="keys and function code (default /var/lib/bento)")
    parser.add_argument("--listen", help="also serve the API on this host:port (for circuits exiting here)")
    parser.add_argument("--api-port", type=int, help="local port behind the onion service (default: any)")
    parser.add_argument("--no-onion", action="store_true", help="do not publish an onion service")
    parser.add_argument("--no-advertise", action="store_true", help="do not add bento=<onion> to ContactInfo")
    parser.add_argument(
        "--metrics", metavar="IP:PORT", help="serve Prometheus metrics here (loopback, e.g. 127.0.0.1:9135)"
    )
    parser.add_argument(
        "--metrics-any-address", action="store_true", help="allow --metrics off loopback (behind a firewall)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.set_defaults(handler=cmd_server)


def cmd_server(args: argparse.Namespace) -> int:
    journal.configure(args.verbose)  # the journal's form under systemd; never a token
    config = ServerConfig.load(
        args.config,
        {
            "control": args.control,
            "state_dir": args.state_dir,
            "listen": args.listen,
            "api_port": args.api_port,
            "onion": False if args.no_onion else None,
            "advertise": False if args.no_advertise else None,
            "metrics": args.metrics,
            "metrics_any_address": True if args.metrics_any_address else None,
        },
    )
    try:
        asyncio.run(BentoServer(config).run())  # a host that cannot confine functions: a BentoError
    except PermissionError as exc:  # a state directory, a cgroup or a socket it may not use
        raise BentoError(
            f"the box cannot start: {exc.strerror}: {exc.filename}",
            fix="run it as a user who may write there, or give another --state-dir",
        ) from None
    return 0
