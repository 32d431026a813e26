"""When a starting testnet is usable: every relay Running in the client's consensus, a
circuit built, and a stream carried through an exit; and which node died if it never is."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

import stem
import stem.control
from python_socks import ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from bento.errors import BentoError
from bento.testnet.errors import TestnetError
from bento.testnet.state import TestnetState
from bento.tor import control
from bento.tor.process import exit_status, log_tail

Progress = Callable[[str], None]


def check_alive(state: TestnetState) -> None:
    """Raise, naming the node and quoting its log, if any tor process has exited."""
    for node in state.nodes:
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


def wait_listening(state: TestnetState, *, deadline: float) -> None:
    """Wait until every tor accepts on its control port.

    Tor opens all its listeners in one step at start-up and exits if any fails to bind, so
    once each control port answers, every port planned for the tors is bound or reported.
    """
    for node in state.nodes:
        while True:
            check_alive(state)
            try:
                socket.create_connection(("127.0.0.1", node.control_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TestnetError(f"{node.nickname}'s control port never opened") from None
                time.sleep(0.05)


def wait_ready(state: TestnetState, *, deadline: float, say: Progress) -> None:
    """Wait until the client lists every relay as Running and has built a circuit."""
    expected = {n.fingerprint for n in state.nodes if n.is_relay}
    client = state.client
    socks = f"127.0.0.1:{client.socks_port}"
    last_report = ""
    with ExitStack() as stack:
        ctl: stem.control.Controller | None = None
        while True:
            check_alive(state)
            if time.monotonic() > deadline:
                raise TestnetError(
                    f"the testnet did not become usable in time ({last_report or 'no consensus'})",
                    fix=f"see the logs under {state.directory} (notice.log of each node)",
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
                    # A built circuit proves little: the client may still lack the
                    # descriptors it needs to pick an exit. Only a stream through an
                    # exit proves the network usable.
                    if _exit_stream_works(socks):
                        say("the client built a circuit and reached 127.0.0.1 through an exit")
                        return
                    last_report = "no stream through an exit yet"
            time.sleep(0.5)


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
