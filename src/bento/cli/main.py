"""Entry point of the ``bento`` command: argument parsing and error reporting.

Start-up is kept fast (``bento --version`` and ``bento --help`` under 100 ms): this module
imports only argparse. Each command group lives in a module of its own, named in
``COMMANDS``; only the module of the command being run is imported, so ``bento invoke``
never loads the server, the testnet or uvicorn. A new command is one line here and an
``add_<command>`` function in its module, which declares the options and the handler.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from bento import __version__


class Command(NamedTuple):
    module: str  # the module that declares it: bento.cli.<module>.add_<name>
    help: str


COMMANDS: dict[str, Command] = {
    "boxes": Command("boxes", "list the Bento boxes in the Tor consensus"),
    "descriptor": Command("boxes", "fetch and verify a box's descriptor"),
    "deploy": Command("deploy", "upload a function to a box"),
    "invoke": Command("invoke", "run an entry point; streams output to stdout and stdin to the function"),
    "attach": Command("invoke", "re-attach to a session; resumes where output stopped"),
    "logs": Command("invoke", "what a session's function printed, while the box keeps the session"),
    "sessions": Command("sessions", "list a function's sessions, their end cause and reason"),
    "kill": Command("sessions", "kill one session; its function goes on"),
    "functions": Command("functions", "list the functions in the keyring, and whether their boxes answer"),
    "forget": Command("functions", "drop functions from the keyring (when their box is gone)"),
    "shutdown": Command("functions", "stop a function and delete it from its box"),
    "tokens": Command("tokens", "single-use, unlinkable rights to a function (blinded tokens)"),
    "dropbox": Command(
        "dropbox", "deposit data at a box for later (put), and fetch it with its capability (get)"
    ),
    "shard": Command("shard", "spread a file over N boxes (put); rebuild it from any K of them (get)"),
    "loadbalance": Command(
        "loadbalance", "one onion address for a service, spread over replicas on boxes (LoadBalancer)"
    ),
    "browse": Command("browse", "fetch a whole page at an exit box with Browser, padded, and unpack it"),
    "cover": Command("cover", "keep a box's circuits busy at a constant rate (link cover: --cover RATE)"),
    "eval": Command("eval", "the website-fingerprinting evaluation: bento eval wf collect|report"),
    "server": Command("server", "run a Bento box beside a Tor relay (foreground; stop with SIGTERM)"),
    "box": Command(
        "box", "the operator's view of their own box: functions, sessions, usage, kill, evict, pause"
    ),
    "testnet": Command("testnet", "run a private Tor network on 127.0.0.1"),
    "demo": Command("demo", "a guided tour of Bento on a private Tor network"),
    "completion": Command("completion", "print a shell completion script (bash or zsh)"),
}

Configure = Callable[[argparse.ArgumentParser], None]


class Parser(argparse.ArgumentParser):
    """Options anywhere on the command line, as in ``bento invoke FN main --str you``: a
    command's parser reads its options first, then its positional arguments
    (``parse_intermixed_args``). A parser of actions (``dropbox put|get``) and one that
    passes the rest of the line on (``testnet run -- CMD``) parse as argparse always does."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        plain = self._subparsers is not None or any(a.nargs == argparse.REMAINDER for a in self._actions)
        if plain or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls this method again
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def configure(name: str) -> Configure:
    """The function that adds command ``name``'s options (importing its module)."""
    # httpx imports its own command line (click, pygments, rich's syntax highlighting) when
    # it can, for `httpx.main`, which Bento never calls: a third of `bento invoke`'s imports.
    # A None entry makes that import fail, and httpx then goes on without it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    module = importlib.import_module(f"bento.cli.{COMMANDS[name].module}")
    add: Configure = getattr(module, f"add_{name}")
    return add


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only ``commands`` (default: every one) get their options and handler."""
    parser = Parser(prog="bento", description="Bento: programmable middleboxes for Tor.")
    parser.add_argument("--version", action="version", version=f"bento {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = COMMANDS if commands is None else commands
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        if name in wanted:
            configure(name)(child)
    return parser


def _chosen(argv: Sequence[str]) -> list[str]:
    """The command named on the command line (the first word that is one), if any."""
    for word in argv:
        if word == "--":
            break
        if word in COMMANDS:
            return [word]
        if not word.startswith("-"):
            break
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: this process's command line, as ``bento`` runs it)."""
    if argv is not None:  # called in a process that does other work (tests): leave its collector alone
        return _run(build_parser(_chosen(argv)).parse_args(argv))
    # A command's start-up makes tens of thousands of objects that live until the process
    # exits (modules, classes, functions), and the cyclic collector walked them again and
    # again while they were made, then all of them at exit: a fifth of `bento invoke`'s
    # CPU time (about 30 ms of its start, 50 of its exit, on a loaded 2-core host). So it
    # is off while the command loads, and what was loaded is frozen (gc.freeze: never
    # walked again); the collector then runs as usual for what the command itself makes,
    # a long session's garbage included.
    gc.disable()
    # Pydantic looks for plugins of every installed package when it builds its first model
    # (a scan of all their metadata, 10-20 ms); a plugin would see each message validated,
    # a session's right among them. The bento command uses none (an operator who wants one
    # in `bento server` sets the variable, even empty, before it starts).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        args = build_parser(_chosen(sys.argv[1:])).parse_args()
    finally:
        gc.freeze()
        gc.enable()
    try:
        return _run(args)
    finally:
        gc.freeze()  # the exit's last collection need not walk what the run loaded either


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130  # ExitStatus.INTERRUPTED (bento.protocol.errors), not imported: start-up stays fast
    except Exception as exc:
        from bento.cli.output import fail  # most commands have it loaded; invoke loads it late
        from bento.errors import BentoError

        if isinstance(exc, BentoError):
            return fail(exc, as_json=getattr(args, "json", False))
        raise
    return code


if __name__ == "__main__":
    sys.exit(main())
