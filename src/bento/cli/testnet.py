"""``bento testnet``: a private Tor network on this machine."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bento.cli.output import console, emit_json, print_table, step, table
from bento.errors import BentoError
from bento.protocol.policy import NodePolicy
from bento.testnet import Testnet, TestnetConfig, default_directory
from bento.tor import control


def add_testnet(parser: argparse.ArgumentParser) -> None:
    parser.description = "A private Tor network of real tor processes on 127.0.0.1, for trying Bento."
    sub = parser.add_subparsers(dest="testnet_command", required=True, metavar="ACTION")

    up = sub.add_parser("up", help="start a testnet and leave it running")
    _add_up_options(up)
    up.add_argument(
        "--force",
        action="store_true",
        help="stop and replace a testnet in DIR even if some of its processes still run",
    )
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    up.set_defaults(handler=cmd_up)

    status = sub.add_parser("status", help="show every node of the testnet")
    _add_dir_option(status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument("--wide", action="store_true", help="keep each table row on one line")
    status.set_defaults(handler=cmd_status)

    env = sub.add_parser("env", help='print `export BENTO_...` lines: eval "$(bento testnet env)"')
    _add_dir_option(env)
    env.set_defaults(handler=cmd_env)

    down = sub.add_parser("down", help="stop the testnet and remove its state")
    _add_dir_option(down)
    down.set_defaults(handler=cmd_down)

    run = sub.add_parser(
        "run",
        help="start a testnet, run a command on it, stop it",
        description="Start a testnet, run CMD with BENTO_SOCKS, BENTO_CONTROL and BENTO_TESTNET_DIR "
        "set, then stop the testnet. Exits with CMD's status. Without --dir the testnet gets a fresh "
        "directory of its own, so that several runs can proceed at once; if this command is killed, "
        "the testnet and CMD die with it.",
    )
    _add_up_options(run, dir_help="state directory (default: a fresh one under $TMPDIR, removed after)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    run.set_defaults(handler=cmd_run)


_DIR_HELP = "state directory (default: $BENTO_TESTNET_DIR or ~/.local/state/bento/testnet)"


def _add_dir_option(parser: argparse.ArgumentParser, help: str = _DIR_HELP) -> None:
    parser.add_argument("--dir", type=Path, default=None, help=help)


def _add_up_options(parser: argparse.ArgumentParser, dir_help: str = _DIR_HELP) -> None:
    _add_dir_option(parser, dir_help)
    parser.add_argument("--relays", type=int, default=5, help="relays besides the authorities (default 5)")
    parser.add_argument("--exits", type=int, default=3, help="how many relays are exits (default 3)")
    parser.add_argument("--authorities", type=int, default=3, help="directory authorities (default 3)")
    parser.add_argument("--bento-boxes", type=int, default=0, help="relays that run a Bento server")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for a usable network (default 120)"
    )
    parser.add_argument(
        "--corpus-sites", type=int, default=100, help="test-corpus sites to serve (default 100; 0: none)"
    )
    parser.add_argument("--corpus-seed", type=int, default=0, help="seed of the test corpus (default 0)")
    parser.add_argument(
        "--hop-delay", type=float, default=None, metavar="MS", help="one-way delay on every link to a relay"
    )
    parser.add_argument(
        "--web-delay", type=float, default=None, metavar="MS", help="one-way delay to the corpus's web server"
    )
    parser.add_argument(
        "--consensus-lifetime",
        type=int,
        default=20,
        metavar="SECONDS",
        help="how long a consensus stays valid once up (default 20; live network: 10800); "
        "clients fetch new ones less often",
    )
    parser.add_argument(
        "--consensus-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a network parameter the authorities vote for (ConsensusParams), e.g. cc_alg=0; repeatable",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="node policy of every Bento box, a TOML file (the [policy] table of a server config, "
        "docs/operator.md); default: the testnet's own",
    )
    parser.add_argument(
        "--instances-total", type=int, default=None, metavar="N", help="instances a box runs at once"
    )
    parser.add_argument(
        "--instances-per-function",
        type=int,
        default=None,
        metavar="N",
        help="instances of one function a box runs at once",
    )
    parser.add_argument(
        "--wan",
        action="store_true",
        help="wide-area latency: --hop-delay 25 --web-delay 40 unless given (see docs/testnet.md)",
    )


def _config(
    args: argparse.Namespace, owner_pid: int | None = None, directory: Path | None = None
) -> TestnetConfig:
    return TestnetConfig(
        directory=directory or args.dir or default_directory(),
        authorities=args.authorities,
        relays=args.relays,
        exits=args.exits,
        bento_boxes=args.bento_boxes,
        bootstrap_timeout=args.timeout,
        corpus_sites=args.corpus_sites,
        corpus_seed=args.corpus_seed,
        hop_delay_ms=_delay(args.hop_delay, args.wan, "WAN_HOP_MS"),
        web_delay_ms=_delay(args.web_delay, args.wan, "WAN_WEB_MS"),
        owner_pid=owner_pid,
        consensus_lifetime=args.consensus_lifetime,
        consensus_params=tuple(args.consensus_param),
        box_policy=_box_policy(args),
    )


def _box_policy(args: argparse.Namespace) -> NodePolicy | None:
    limits = {"instances_total": args.instances_total, "instances_per_function": args.instances_per_function}
    if args.policy is None and all(value is None for value in limits.values()):
        return None  # the testnet's own, decided where the boxes start
    from bento.testnet.box_policy import box_policy

    return box_policy(args.policy, **limits)


def _delay(given: float | None, wan: bool, preset: str) -> float:
    if given is not None:
        return given
    if not wan:
        return 0.0
    from bento.testnet import latency

    value: float = getattr(latency, preset)
    return value


def cmd_up(args: argparse.Namespace) -> int:
    net = Testnet.start(_config(args), progress=step, force=args.force)
    if args.json:
        emit_json(net.status())
        return 0
    console.print(
        f"[green]testnet up[/green] in {net.state.bootstrap_seconds:.1f} s: "
        f"{len(net.nodes)} tor processes, state in {net.directory}"
    )
    console.print(f"  SOCKS   {net.socks_address}\n  control {net.control_address}")
    console.print("  stop it with: bento testnet down" + (f" --dir {args.dir}" if args.dir else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    net = Testnet.attach(args.dir or default_directory())
    status = net.status()
    if args.json:
        emit_json(status)
    else:
        print_status(status, wide=args.wide)
    return 0 if status["running"] else 1


# Every testnet relay is Running, Valid, Fast...; these are the flags that tell them apart.
_NOTABLE_FLAGS = ("Authority", "Exit", "Guard", "HSDir", "BadExit")


def print_status(status: dict[str, Any], *, wide: bool = False) -> None:
    columns = ("role", "nickname", "fingerprint", "ports", "flags", "process", "bento box")
    rows = table(columns, title=f"testnet in {status['directory']}", wide=wide)
    for node in status["nodes"]:
        ports = ", ".join(
            f"{name} {node[key]}"
            for name, key in (
                ("or", "or_port"),
                ("dir", "dir_port"),
                ("socks", "socks_port"),
                ("ctl", "control_port"),
            )
            if node[key]
        )
        process = f"[green]alive[/green] {node['pid']}" if node["alive"] else "[red]dead[/red]"
        box = node.get("bento")
        bento = (
            "-"
            if not box
            else f"{box['onion']}.onion " + ("[green]up[/green]" if box["alive"] else "[red]down[/red]")
        )
        rows.add_row(
            node["role"],
            node["nickname"],
            node["fingerprint"] or "-",
            ports,
            " ".join(f for f in node["flags"] if f in _NOTABLE_FLAGS) or "-",
            process,
            bento,
        )
    print_table(rows, wide=wide)
    console.print(f"client SOCKS {status['socks']}   client control {status['control']}")
    for service in status.get("services", []):
        state = "[green]alive[/green]" if service["alive"] else "[red]dead[/red]"
        port = f" port {service['port']}" if service["port"] else ""
        console.print(f"{service['name']}{port} {state} {service['pid']}")
    latency = status.get("latency_ms") or {}
    if latency.get("hop") or latency.get("web"):
        console.print(
            f"emulated latency, one way: {latency['hop']:g} ms per relay link, "
            f"{latency['web']:g} ms to the web server"
        )


def cmd_env(args: argparse.Namespace) -> int:
    directory = args.dir or default_directory()
    net = Testnet.attach(directory)
    state = net.state
    expected = (
        [n.nickname for n in state.nodes]
        + [f"{n.nickname}-bento" for n in state.boxes]
        + [s.name for s in state.services]
    )
    running = set(state.live_processes())
    if dead := [name for name in expected if name not in running]:
        down = f"bento testnet down{f' --dir {args.dir}' if args.dir else ''}"
        raise BentoError(
            f"the testnet in {directory} is not running: {', '.join(dead)} "
            f"({len(dead)} of its {len(expected)} processes) exited; its variables would lead nowhere",
            fix=f"`{down}` clears it, then `bento testnet up` starts a new one",
        )
    try:  # its client's control port answers: the address the variables give leads somewhere
        socket.create_connection(control.parse_address(net.control_address), timeout=5).close()
    except OSError as exc:
        raise BentoError(
            f"the testnet in {directory} does not answer at {net.control_address}: {exc}",
            fix="`bento testnet status` shows its processes; `bento testnet down` and `up` replace it",
        ) from None
    for name, value in net.environment().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    directory = args.dir or default_directory()
    if Testnet.down(directory):
        console.print(f"testnet in {directory} stopped and removed")
    else:
        console.print(f"no testnet in {directory}; nothing to do")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise BentoError("no command to run", fix="bento testnet run -- CMD [ARGS...]")
    with contextlib.ExitStack() as stack:
        directory = args.dir
        if directory is None:
            # A directory of this run's own: a second `run` beside it is not refused. The
            # testnet removes what it put there, and the directory goes once empty.
            directory = Path(tempfile.mkdtemp(prefix="bento-testnet-run-"))
            stack.callback(_remove_if_empty, directory)
        # The testnet is tied to this process: if it is killed, tor follows.
        net = stack.enter_context(
            Testnet.start(_config(args, owner_pid=os.getpid(), directory=directory), progress=step)
        )
        step(f"testnet up in {net.state.bootstrap_seconds:.1f} s; running {' '.join(cmd)}")
        child = subprocess.Popen(
            cmd, env={**os.environ, **net.environment()}, preexec_fn=_die_with_parent(os.getpid())
        )
        # Forward SIGTERM so the testnet still comes down in order.
        previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.terminate()
            return child.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    raise AssertionError("unreachable")  # for mypy: the with block returns or raises


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the kernel kills the child when ``parent`` dies, even by SIGKILL,
    which no signal handler of ours could forward."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(137)

    return arm


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()
