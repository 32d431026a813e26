"""A socket the broker grants a function goes where the gate approved, and nowhere else.

The broker hands a function real sockets of the box's network namespace: a connection
from ``api.connect``, the SOCKS stream behind ``api.tor`` circuits, a listener from
``api.listen`` and the connections it accepts. A hostile function takes each and tries
every way to point it somewhere else (the box's own control and API ports): connect
again, dissolve the connection (``AF_UNSPEC``) and connect, send with an address and
``MSG_FASTOPEN``, shut it down and reuse it, a second descriptor, bind, listen,
socket options that change where or how it talks, and the ioctls that read the box's
interfaces and addresses (``SIOCGIFCONF``, ``SIOCGIFADDR``). Each is refused by the sandbox's
seccomp filter with EPERM (a PermissionError), what a function legitimately sets still
works, and a neighbour function keeps answering throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from hostile import PING, ping_round_trips
from support import TIMEOUT, run

from bento.client.box import Box
from bento.protocol.manifest import Manifest
from bento.protocol.messages import Ended, SessionState
from bento.protocol.policy import Needs, SyscallProfile
from bento.testnet import Node, Testnet
from bento.testnet.boxes import server_status

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 4)]
STEP = 60  # seconds for one session of the hostile function on a busy host (about 1 s on a quiet one)

GRANTED = r'''
import ctypes
import fcntl
import os
import socket
import _socket

from bento.runtime import api

libc = ctypes.CDLL(None, use_errno=True)
MSG_FASTOPEN = 0x20000000


def _outcome(action):
    try:
        value = action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"ALLOWED: {value!r}"[:200]


def _raw_connect(fd_or_sock, address):
    """The kernel's connect, past the runtime's routing of socket.connect to the broker."""
    sock = fd_or_sock if isinstance(fd_or_sock, socket.socket) else socket.socket(fileno=fd_or_sock)
    sock.settimeout(5)
    _socket.socket.connect(sock, address)
    sock.sendall(b"PROTOCOLINFO\r\n")  # tor's control port answers 250-PROTOCOLINFO
    return sock.recv(64)


def _dissolve(fd):
    """connect(fd, AF_UNSPEC): TCP drops its connection (or stops listening) and may connect anew."""
    unspec = ctypes.create_string_buffer(16)  # sa_family 0
    if libc.connect(fd, unspec, 16) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "dissolved"


def _then(*steps):
    for step in steps:
        value = step()
    return value


def attacks(fresh, targets):
    """Every way to re-point a socket that ``fresh()`` grants, at each of ``targets``."""
    out = {}
    for name, (host, port) in targets.items():
        address = (host, port)
        s = fresh()
        out[f"connect again: {name}"] = _outcome(lambda: _raw_connect(s, address))
        s = fresh()
        out[f"dissolve, connect: {name}"] = _outcome(lambda: _then(lambda: _dissolve(s.fileno()),
                                                                   lambda: _raw_connect(s, address)))
        s = fresh()
        out[f"sendto fastopen: {name}"] = _outcome(
            lambda: s.sendto(b"PROTOCOLINFO\r\n", MSG_FASTOPEN, address))
        s = fresh()
        out[f"sendmsg fastopen: {name}"] = _outcome(
            lambda: s.sendmsg([b"PROTOCOLINFO\r\n"], [], MSG_FASTOPEN, address))
        s = fresh()
        out[f"shutdown, connect: {name}"] = _outcome(lambda: _then(lambda: s.shutdown(socket.SHUT_RDWR),
                                                                   lambda: _raw_connect(s, address)))
        s = fresh()
        out[f"shutdown, dissolve, connect: {name}"] = _outcome(
            lambda: _then(lambda: s.shutdown(socket.SHUT_RDWR), lambda: _dissolve(s.fileno()),
                          lambda: _raw_connect(s, address)))
        s = fresh()
        copy = os.dup(s.fileno())
        out[f"dup, dissolve, connect: {name}"] = _outcome(lambda: _then(lambda: _dissolve(copy),
                                                                        lambda: _raw_connect(copy, address)))
    s = fresh()
    # The box's interfaces and addresses, read through the granted socket.
    out["ioctl SIOCGIFCONF"] = _outcome(lambda: fcntl.ioctl(s, 0x8912, bytes(16)))
    out["ioctl SIOCGIFADDR"] = _outcome(lambda: fcntl.ioctl(s, 0x8915, b"lo".ljust(40, b"\0")))
    out["bind"] = _outcome(lambda: _socket.socket.bind(s, ("127.0.0.1", 0)))
    out["listen"] = _outcome(lambda: _socket.socket.listen(s, 4096))
    options = {
        "SO_BINDTODEVICE": (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo\0"),
        "SO_MARK": (socket.SOL_SOCKET, socket.SO_MARK, 1),
        "SO_PRIORITY": (socket.SOL_SOCKET, socket.SO_PRIORITY, 6),
        "IP_TRANSPARENT": (socket.SOL_IP, 19, 1),
        "IP_TTL": (socket.IPPROTO_IP, socket.IP_TTL, 1),
        "IP_OPTIONS": (socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([131, 7, 4, 127, 0, 0, 1, 0])),  # LSRR
        "IP_HDRINCL": (socket.IPPROTO_IP, socket.IP_HDRINCL, 1),
        "TCP_REPAIR": (socket.IPPROTO_TCP, 19, 1),
        "TCP_FASTOPEN_CONNECT": (socket.IPPROTO_TCP, 30, 1),
        "TCP_CONGESTION": (socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno"),
        "TCP_ULP": (socket.IPPROTO_TCP, 31, b"tls"),
    }
    s = fresh()
    for name, option in options.items():
        out[f"setsockopt {name}"] = _outcome(lambda: s.setsockopt(*option))
    return out


def kept(s):
    """What a function legitimately does with a granted socket: still works."""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.settimeout(30)
    # An address on a connected TCP socket is ignored: the bytes go to the granted peer.
    s.sendto(b"PROTOCOLINFO\r\n", ("127.0.0.1", 9))
    return s.recv(100).decode()


def tcp(port, targets):
    granted = []
    def fresh():
        granted.append(api.connect("127.0.0.1", port, timeout=30))
        return granted[-1]
    return {"attacks": attacks(fresh, targets), "kept": kept(fresh())}


def stream(port, targets):
    """Every attack on a stream of its own, over one circuit. What is tested is each stream's
    refusals, not the circuit: one that tor closes under them (relays starved on a busy
    host), which fails the stream at once with tor's reason, is built again, once."""
    circuits = []
    def build():
        if circuits:
            circuits[-1].close()
        circuits.append(api.tor.circuit(length=3, exit_to=("127.0.0.1", port)).wait(timeout=30))
    granted = []
    def fresh():
        try:
            granted.append(circuits[-1].connect("127.0.0.1", port, timeout=20))
        except api.tor.TorError:
            if len(circuits) > 1:
                raise
            build()
            granted.append(circuits[-1].connect("127.0.0.1", port, timeout=20))
        return granted[-1]
    build()
    return {"attacks": attacks(fresh, targets), "kept": kept(fresh())}


def own_sockets():
    """What a library that makes its own sockets is told (no broker involved)."""
    return {
        "bind": _outcome(lambda: socket.socket().bind(("127.0.0.1", 8080))),
        "listen": _outcome(lambda: socket.socket().listen()),
        "unix connect": _outcome(lambda: socket.socket(socket.AF_UNIX).connect("/tmp/x")),
    }


def listener(targets):
    granted = []
    def fresh_listener():
        granted.append(api.listen())
        return granted[-1]
    def fresh_accepted():
        server = fresh_listener()
        granted.append(api.connect("127.0.0.1", server.getsockname()[1], timeout=30))
        server.settimeout(30)
        peer, _ = server.accept()
        granted.append(peer)
        return peer
    # The listener still serves: a connection through the broker reaches it, and its peer
    # takes the legitimate options.
    server = fresh_listener()
    client = api.connect("127.0.0.1", server.getsockname()[1], timeout=30)
    server.settimeout(30)
    peer, _ = server.accept()
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.sendall(b"through the listener")
    return {
        "listener": attacks(fresh_listener, targets),
        "accepted": attacks(fresh_accepted, targets),
        "kept": peer.recv(100).decode(),
    }
'''

NETWORK = [SyscallProfile.COMPUTE, SyscallProfile.NETWORK]
NEEDS = Needs(
    memory_mb=128, wall_seconds=600, processes=8, open_files=256, network=True, listen=True, tor_circuits=1,
    syscall_profiles=NETWORK,
)  # fmt: skip


@pytest.fixture
def box_node(each_box: Node) -> Node:
    """Each test here runs on the first box and on the box of a dedicated user (conftest)."""
    return each_box


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(30)
        with contextlib.suppress(OSError):  # a hostile client that hung up first, or never sent
            self.request.sendall(b"pong:" + self.request.recv(100))


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on loopback that answers ``pong:<what it got>`` on every connection at once."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()
        thread.join()


async def _step(budget: float, session: Coroutine[Any, Any, tuple[bytes, Ended]]) -> Ended:
    """One session of the hostile function, run to its end within ``budget`` seconds."""
    async with asyncio.timeout(budget):
        _, ended = await session
    return ended


def _refused(results: dict[str, str], *, chromium: bool, listener: bool = False) -> None:
    """Every attack was refused by the seccomp filter (EPERM)."""
    if chromium:
        # chromium binds and listens on a Unix socket of its own, so its profile keeps bind
        # and listen: the kernel refuses to bind a bound socket or make a connected one
        # listen, and listening again only sets the backlog of a listener the broker bound.
        assert results.pop("bind").startswith("OSError: [Errno 22]"), results
        listen = results.pop("listen")
        assert (listen == "ALLOWED: None") if listener else listen.startswith("OSError: [Errno 22]"), listen
    allowed = {attack: said for attack, said in results.items() if not said.startswith("PermissionError")}
    assert allowed == {}
    assert all(outcome.startswith("PermissionError: [Errno 1]") for outcome in results.values()), results


@pytest.mark.parametrize("profiles", [NETWORK, [*NETWORK, SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM]],
                         ids=["network-profile", "chromium-profile"])  # fmt: skip
async def test_granted_sockets_cannot_be_pointed_elsewhere(
    testnet: Testnet, box: Box, box_node: Node, echo_port: int, profiles: list[SyscallProfile]
) -> None:
    status = server_status(box_node)
    targets = {
        "control port": ["127.0.0.1", box_node.control_port],
        "API port": ["127.0.0.1", int(str(status["api"]).rsplit(":", 1)[1])],
    }
    descriptor = await box.descriptor()
    if not set(profiles) <= set(descriptor.policy.syscall_profiles):
        pytest.skip("this box offers no chromium profile (Debian's chromium and Playwright)")
    manifest = Manifest(name="granted", needs=NEEDS.model_copy(update={"syscall_profiles": profiles}))
    hostile = await box.deploy(GRANTED.encode(), manifest)
    ping = await box.deploy(PING.encode(), Manifest(name="ping", needs=Needs(wall_seconds=600)))
    session_id = await box.invoke(ping, "ping")
    async with await box.attach(ping, session_id) as neighbour:
        await ping_round_trips(neighbour, 2)
        tcp = await _step(STEP, run(box, hostile, "tcp", echo_port, targets))
        await ping_round_trips(neighbour, 2)
        # Each attack takes a stream of its own over Tor: the control port here, both ports on
        # the other paths. Its budget: a circuit (30 s) and a stream (20 s), twice at most.
        control = {"control port": targets["control port"]}
        stream = await _step(STEP + 2 * (30 + 20), run(box, hostile, "stream", echo_port, control))
        await ping_round_trips(neighbour, 2)
        listener = await _step(STEP, run(box, hostile, "listener", targets))
        own = await _step(STEP, run(box, hostile, "own_sockets"))
        await ping_round_trips(neighbour, 2)
    for ended in (tcp, stream, listener, own):
        assert ended.state is SessionState.COMPLETED, ended.reason

    chromium = SyscallProfile.CHROMIUM in profiles
    # api.connect's socket and the SOCKS stream behind a circuit: every way refused.
    _refused(tcp.result["attacks"], chromium=chromium)
    _refused(stream.result["attacks"], chromium=chromium)
    # What functions set on their connections still works, and an address given with the
    # bytes is ignored: they reach the granted peer.
    assert tcp.result["kept"] == "pong:PROTOCOLINFO\r\n"
    assert stream.result["kept"] == "pong:PROTOCOLINFO\r\n"
    # A listener from api.listen and a connection it accepted: the same.
    _refused(listener.result["listener"], chromium=chromium, listener=True)
    _refused(listener.result["accepted"], chromium=chromium)
    assert listener.result["kept"] == "through the listener"
    # A library's own sockets are told why, and what to use instead.
    assert "cannot connect" in own.result.pop("unix connect"), own.result
    if not chromium:
        assert all("api.listen() gives a listener" in said for said in own.result.values()), own.result

    assert (await box.descriptor()).boot_id
    await box.shutdown(hostile)
    await box.shutdown(ping)
