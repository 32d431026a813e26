"""Starting, inspecting and stopping a testnet."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import stem
import stem.control
from python_socks import ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from bento.errors import BentoError
from bento.sandbox import uids
from bento.testnet import boxes
from bento.testnet.config import TestnetConfig, write_torrc
from bento.testnet.state import STATE_FILE, Node, Role, TestnetState
from bento.tor import control
from bento.tor.process import exit_status, log_tail, spawn_detached

Progress = Callable[[str], None]
TOR = "tor"


class TestnetError(BentoError):
    """The testnet could not be started, found or stopped."""

    __test__ = False  # not a pytest test class, despite its name


def default_directory() -> Path:
    """``$BENTO_TESTNET_DIR``, else ``$XDG_STATE_HOME/bento/testnet`` (~/.local/state/...)."""
    if env := os.environ.get("BENTO_TESTNET_DIR"):
        return Path(env)
    state_home = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state_home) / "bento" / "testnet"


class Testnet:
    """A running testnet. ``Testnet.start`` makes one; ``Testnet.attach`` finds one on disk.

    Used as a context manager it is stopped (every process, its state removed) on exit.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, state: TestnetState) -> None:
        self.state = state
        # Control connections that own our tor processes (see control.take_ownership).
        self._leases: list[socket.socket] = []

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def start(cls, config: TestnetConfig, progress: Progress | None = None) -> Testnet:
        """Start a testnet in ``config.directory`` and return once a circuit can be built.

        Stale state left in that directory by a crash is cleaned up first; a testnet that
        is still fully running there is an error.
        """
        say = progress or (lambda _msg: None)
        config.validate()
        directory = config.directory.resolve()
        old = TestnetState.load(directory)
        if old is not None:
            if old.nodes and all(n.alive() for n in old.nodes):
                raise TestnetError(
                    f"a testnet is already running in {directory}",
                    fix="stop it with `bento testnet down`, or use --dir for a second one",
                )
            say("cleaning up a previous testnet that did not shut down")
            cls.down(directory)
        directory.mkdir(parents=True, exist_ok=True)

        started = time.monotonic()
        state = TestnetState(directory=str(directory), started_at=time.time())
        state.nodes = _plan(directory, config)
        net = cls(state)
        try:
            say(f"generating keys for {len(state.nodes) - 1} relays and authorities")
            _generate_keys(state.nodes)
            box_nodes = _box_nodes(state.nodes, config.bento_boxes)
            for node in box_nodes:
                boxes.prepare(node, directory, user=config.box_user if node is box_nodes[-1] else None)
            for node in state.nodes:
                write_torrc(node, state.nodes, config.owner_pid)
            say(f"starting {len(state.nodes)} tor processes")
            for node in state.nodes:
                node.pid = spawn_detached(
                    [TOR, "-f", str(node.torrc), "--defaults-torrc", os.devnull],
                    log=Path(node.data_dir) / "stdout.log",
                    cwd=Path(node.data_dir),
                )
            state.save()
            if config.owner_pid == os.getpid():
                net._take_ownership(deadline=started + config.bootstrap_timeout)
            net._wait_ready(deadline=started + config.bootstrap_timeout, say=say)
            if state.boxes:
                net._start_boxes(deadline=started + config.bootstrap_timeout, say=say)
        except BaseException:
            net._release()
            net._kill_all()
            raise
        state.bootstrap_seconds = round(time.monotonic() - started, 2)
        state.save()
        return net

    @classmethod
    def attach(cls, directory: Path) -> Testnet:
        """The testnet whose state is in ``directory``."""
        state = TestnetState.load(directory.resolve())
        if state is None:
            raise TestnetError(
                f"no testnet in {directory}",
                fix="start one with `bento testnet up` (or pass the --dir it was started with)",
            )
        return cls(state)

    def stop(self) -> None:
        """Stop every process of this testnet and remove its state."""
        self._release()
        self.down(Path(self.state.directory))

    def _take_ownership(self, *, deadline: float) -> None:
        for node in self.state.nodes:
            while True:
                self._check_alive()
                try:
                    lease = control.take_ownership(node.control_address, node.control_cookie)
                except (OSError, BentoError):
                    if time.monotonic() > deadline:
                        raise TestnetError(f"{node.nickname}'s control port never opened") from None
                    time.sleep(0.1)
                    continue
                self._leases.append(lease)
                break

    def _release(self) -> None:
        """Close the owning connections: each tor exits at once."""
        for lease in self._leases:
            lease.close()
        self._leases.clear()

    @staticmethod
    def down(directory: Path) -> bool:
        """Stop the testnet in ``directory`` and remove what it created.

        Harmless when there is none (returns False). Only processes recorded in the state
        file, and still running the recorded torrc, are signalled; only the node
        directories and the state file are removed, never the rest of ``directory``.
        """
        directory = directory.resolve()
        state = TestnetState.load(directory)
        if state is None:
            return False
        Testnet(state)._kill_all()
        for node in state.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)
            if node.bento_dir is not None:
                shutil.rmtree(node.bento_dir, ignore_errors=True)
        uids.clean_stale()  # the uid blocks of servers that died without releasing theirs
        with suppress(FileNotFoundError):
            (directory / STATE_FILE).unlink()
        with suppress(OSError):
            directory.rmdir()  # only if we left it empty
        return True

    def _kill_all(self) -> None:
        for node in self.state.boxes:  # first, so that each can withdraw from its tor
            boxes.stop(node)
        for node in self.state.nodes:
            if (proc := node.process) is not None:
                proc.stop()

    def _start_boxes(self, *, deadline: float, say: Progress) -> None:
        say(f"starting {len(self.state.boxes)} Bento server(s)")
        for node in self.state.boxes:
            boxes.start(node)
        self.state.save()
        for node in self.state.boxes:
            boxes.wait_published(node, deadline)
        boxes.wait_reachable(self.state.boxes, self.socks_address, deadline)
        say("every Bento box answers over Tor")

    def restart_box(self, nickname: str, timeout: float = 120.0) -> None:
        """Stop the Bento server beside relay ``nickname`` and start it again."""
        node = next((n for n in self.state.boxes if n.nickname == nickname), None)
        if node is None:
            raise TestnetError(f"{nickname} is not a Bento box of this testnet")
        boxes.stop(node)
        boxes.start(node)
        self.state.save()
        deadline = time.monotonic() + timeout
        boxes.wait_published(node, deadline)
        boxes.wait_reachable([node], self.socks_address, deadline)

    def __enter__(self) -> Testnet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- what users need

    @property
    def directory(self) -> Path:
        return Path(self.state.directory)

    @property
    def socks_address(self) -> str:
        return f"127.0.0.1:{self.state.client.socks_port}"

    @property
    def control_address(self) -> str:
        return self.state.client.control_address

    @property
    def nodes(self) -> list[Node]:
        return self.state.nodes

    def relays(self) -> list[Node]:
        """Every relay (authorities included), in start order."""
        return [n for n in self.state.nodes if n.is_relay]

    def environment(self) -> dict[str, str]:
        """The variables a command run on this testnet gets (see ``bento testnet run``)."""
        return {
            "BENTO_SOCKS": self.socks_address,
            "BENTO_CONTROL": self.control_address,
            "BENTO_TESTNET_DIR": str(self.directory),
        }

    def status(self) -> dict[str, Any]:
        """Every node with role, nickname, fingerprint, ports, flags and liveness (JSON-ready)."""
        flags = self._consensus_flags()
        nodes = [
            {
                "role": str(n.role),
                "nickname": n.nickname,
                "fingerprint": n.fingerprint,
                "or_port": n.or_port,
                "dir_port": n.dir_port,
                "control_port": n.control_port,
                "socks_port": n.socks_port,
                "pid": n.pid,
                "alive": n.alive(),
                "flags": flags.get(n.fingerprint or "", []),
                "bento": None
                if n.bento_dir is None
                else {
                    "onion": n.bento_onion,
                    "pid": n.bento_pid,
                    "alive": n.bento_alive(),
                    **boxes.server_status(n),
                },
            }
            for n in self.state.nodes
        ]
        return {
            "directory": self.state.directory,
            "running": all(n["alive"] for n in nodes) and all(n.bento_alive() for n in self.state.boxes),
            "bootstrap_seconds": self.state.bootstrap_seconds,
            "socks": self.socks_address,
            "control": self.control_address,
            "nodes": nodes,
        }

    def _consensus_flags(self) -> dict[str, list[str]]:
        """Relay flags as the client sees them; empty if the client cannot be asked."""
        if not self.state.client.alive():
            return {}
        try:
            with control.connect(self.control_address) as ctl:
                return {s.fingerprint: sorted(s.flags) for s in ctl.get_network_statuses()}
        except (BentoError, stem.ControllerError, stem.SocketError):
            return {}

    # ----------------------------------------------------------------- readiness

    def _wait_ready(self, *, deadline: float, say: Progress) -> None:
        """Wait until the client lists every relay as Running and has built a circuit."""
        expected = {n.fingerprint for n in self.relays()}
        client = self.state.client
        last_report = ""
        with ExitStack() as stack:
            ctl: stem.control.Controller | None = None
            while True:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise TestnetError(
                        f"the testnet did not become usable in time ({last_report or 'no consensus'})",
                        fix=f"see the logs under {self.directory} (notice.log of each node)",
                    )
                if ctl is None:
                    with suppress(BentoError):
                        ctl = stack.enter_context(control.connect(client.control_address))
                if ctl is not None:
                    listed = _running_fingerprints(ctl)
                    report = f"consensus lists {len(listed & expected)}/{len(expected)} relays"
                    if report != last_report:
                        say(report)
                        last_report = report
                    if expected <= listed and _build_circuit(ctl, deadline):
                        # A built circuit proves little: the client may still lack
                        # the descriptors it needs to pick an exit. Only a stream
                        # through an exit proves the network usable.
                        if _exit_stream_works(self.socks_address):
                            say("the client built a circuit and reached 127.0.0.1 through an exit")
                            return
                        last_report = "no stream through an exit yet"
                time.sleep(0.5)

    def _check_alive(self) -> None:
        for node in self.state.nodes:
            if not node.alive():
                # Errors before tor opens its log file (a bad option) only reach stdout.
                log = node.log if node.log.exists() else Path(node.data_dir) / "stdout.log"
                status = exit_status(node.pid) if node.pid is not None else None
                how = "" if status is None else f" (exit status {status})"
                raise TestnetError(
                    f"tor node {node.nickname} ({node.role}) exited during start-up{how}; "
                    f"the end of its log ({log}):\n{log_tail(log)}",
                    fix="read the log above; a port clash is fixed by running `bento testnet up` again",
                )


def _running_fingerprints(ctl: stem.control.Controller) -> set[str]:
    try:
        return {s.fingerprint for s in ctl.get_network_statuses() if "Running" in s.flags}
    except stem.ControllerError:
        return set()  # no consensus yet


def _build_circuit(ctl: stem.control.Controller, deadline: float) -> bool:
    """Build one general circuit and close it again; False if that failed this time."""
    timeout = max(1.0, min(15.0, deadline - time.monotonic()))
    try:
        circuit_id = ctl.new_circuit(await_build=True, timeout=timeout)
    except (stem.ControllerError, stem.CircuitExtensionFailed, stem.Timeout):
        return False
    with suppress(stem.ControllerError):
        ctl.close_circuit(circuit_id)
    return True


def _exit_stream_works(socks_address: str, timeout: float = 8.0) -> bool:
    """Open a stream through the client's SOCKS port to a listener of ours on loopback."""
    host, port = control.parse_address(socks_address)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout)
        try:
            proxy = Proxy.from_url(f"socks5://{host}:{port}")
            with proxy.connect("127.0.0.1", listener.getsockname()[1], timeout=timeout) as stream:
                peer, _ = listener.accept()
                with peer:
                    peer.sendall(b"ok")
                stream.settimeout(timeout)
                return stream.recv(2) == b"ok"
        except (OSError, ProxyError, ProxyTimeoutError):
            return False


# --------------------------------------------------------------------- planning


def _free_ports(count: int) -> Iterator[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held open together, then freed)."""
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
    return iter(ports)


def _plan(directory: Path, config: TestnetConfig) -> list[Node]:
    """Nicknames, roles, data directories and ports of every node."""
    roles = (
        [(Role.AUTHORITY, f"auth{i}") for i in range(config.authorities)]
        + [(Role.EXIT, f"exit{i}") for i in range(config.exits)]
        + [(Role.RELAY, f"relay{i}") for i in range(config.relays - config.exits)]
        + [(Role.CLIENT, "client")]
    )
    ports = _free_ports(3 * len(roles))
    nodes = []
    for role, nickname in roles:
        data_dir = directory / nickname
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        node = Node(role=role, nickname=nickname, data_dir=str(data_dir), control_port=next(ports))
        if role is Role.CLIENT:
            node.socks_port = next(ports)
        else:
            node.or_port = next(ports)
        if role is Role.AUTHORITY:
            node.dir_port = next(ports)
        nodes.append(node)
    return nodes


def _box_nodes(nodes: list[Node], count: int) -> list[Node]:
    """The relays that run Bento: exits first (a box that is an exit can fetch for users)."""
    candidates = [n for n in nodes if n.role is Role.EXIT] + [n for n in nodes if n.role is Role.RELAY]
    return candidates[:count]


def _generate_keys(nodes: list[Node]) -> None:
    """Relay identity keys for every relay, v3 authority keys for authorities (in parallel)."""
    jobs: list[tuple[Node, str, subprocess.Popen[bytes]]] = []
    for node in nodes:
        if not node.is_relay:
            continue
        data = Path(node.data_dir)
        jobs.append(
            (
                node,
                "identity",
                _run(
                    [
                        TOR,
                        "--quiet",
                        "--ignore-missing-torrc",
                        "-f",
                        os.devnull,
                        "--defaults-torrc",
                        os.devnull,
                        "--list-fingerprint",
                        "--orport",
                        "1",
                        "--nickname",
                        node.nickname,
                        "--datadirectory",
                        str(data),
                    ],
                    cwd=data,
                ),
            )
        )
        if node.role is Role.AUTHORITY:
            keys = data / "keys"
            keys.mkdir(mode=0o700, exist_ok=True)
            jobs.append(
                (
                    node,
                    "authority",
                    _run(
                        [
                            "tor-gencert",
                            "--create-identity-key",
                            "-m",
                            "12",
                            "-a",
                            f"127.0.0.1:{node.dir_port}",
                            "-i",
                            str(keys / "authority_identity_key"),
                            "-s",
                            str(keys / "authority_signing_key"),
                            "-c",
                            str(keys / "authority_certificate"),
                            "--passphrase-fd",
                            "0",
                        ],
                        cwd=data,
                        stdin=b"\n",
                    ),
                )
            )
    for node, what, proc in jobs:
        out = proc.stdout.read() if proc.stdout is not None else b""
        if proc.wait(timeout=120) != 0:
            raise TestnetError(
                f"generating {what} keys for {node.nickname} failed: {out.decode(errors='replace').strip()}"
            )
    for node in nodes:
        if node.is_relay:
            node.fingerprint = (Path(node.data_dir) / "fingerprint").read_text().split()[1]
        if node.role is Role.AUTHORITY:
            cert = (Path(node.data_dir) / "keys" / "authority_certificate").read_text()
            node.v3_identity = next(
                line.split()[1] for line in cert.splitlines() if line.startswith("fingerprint ")
            )


def _run(argv: list[str], *, cwd: Path, stdin: bytes | None = None) -> subprocess.Popen[bytes]:
    if shutil.which(argv[0]) is None:
        raise TestnetError(
            f"`{argv[0]}` is not installed",
            fix="install Debian's tor package (sudo apt-get install tor), or run ./scripts/demo",
        )
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if proc.stdin is not None:
        proc.stdin.write(stdin or b"")
        proc.stdin.close()
    return proc
