"""What the seccomp filter lets a function do with a socket the broker granted.

The rules as data (bento.sandbox.seccomp), and the compiled filter installed in a real
child process that holds sockets made before it, as the broker's are: a connection, a
listener with a connection waiting. In the testnet the same attacks run against a real
box (tests/e2e/test_granted_sockets.py).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import os
import socket
from collections.abc import Callable, Iterator

import pytest

from bento.protocol.policy import SyscallProfile
from bento.runtime import confine
from bento.sandbox import seccomp

EVERY_SET = [
    frozenset(chosen)
    for size in range(len(SyscallProfile) + 1)
    for chosen in itertools.combinations(list(SyscallProfile), size)
]
CHROMIUM = frozenset({SyscallProfile.COMPUTE, SyscallProfile.PROCESSES, SyscallProfile.CHROMIUM})
NETWORK = frozenset({SyscallProfile.COMPUTE, SyscallProfile.NETWORK})


@pytest.mark.parametrize("profiles", EVERY_SET, ids=lambda p: "+".join(sorted(p)) or "none")
@pytest.mark.parametrize("allow_exec", [False, True])
def test_no_profile_allows_connect_or_unchecked_sends_and_options(
    profiles: frozenset[SyscallProfile], allow_exec: bool
) -> None:
    calls = seccomp.allowed_calls(profiles, allow_exec=allow_exec)
    # connect re-points any TCP socket; sends and options are allowed only with their arguments checked.
    assert not calls & {"connect", "sendto", "sendmsg", "sendmmsg", "setsockopt", "io_uring_setup"}
    # bind and listen only for chromium's own Unix socket; accept only for the broker's listeners.
    assert calls & {"bind", "listen"} == (
        {"bind", "listen"} if SyscallProfile.CHROMIUM in profiles else set()
    )
    assert ("accept4" in calls) == (SyscallProfile.NETWORK in profiles)


def test_the_socket_options_change_how_much_never_where() -> None:
    refused = {
        (socket.SOL_SOCKET, socket.SO_BINDTODEVICE), (socket.SOL_SOCKET, socket.SO_MARK),
        (socket.SOL_SOCKET, socket.SO_PRIORITY), (socket.SOL_SOCKET, 26),  # SO_ATTACH_FILTER
        (socket.SOL_SOCKET, 32), (socket.SOL_SOCKET, 33),  # SO_SNDBUFFORCE, SO_RCVBUFFORCE
        (socket.IPPROTO_TCP, 19), (socket.IPPROTO_TCP, 23), (socket.IPPROTO_TCP, 30),  # repair, fast open
        (socket.IPPROTO_TCP, socket.TCP_CONGESTION), (socket.IPPROTO_TCP, 31),  # TCP_ULP
    }  # fmt: skip
    assert not refused & seccomp.SOCKET_OPTIONS
    # Not a single IP or IPv6 option: transparent proxying, source routes, TTLs, raw headers.
    assert {level for level, _ in seccomp.SOCKET_OPTIONS} == {socket.SOL_SOCKET, socket.IPPROTO_TCP}


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        listening.settimeout(10)
        yield listening


def _in_child(
    profiles: frozenset[SyscallProfile], attacks: dict[str, Callable[[], object]]
) -> dict[str, str]:
    """Run each attack in a forked child under the compiled filter: {name: "ok" or the errno's name}."""
    program = seccomp.compile_filter(profiles, allow_exec=False)
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only the attacks and os._exit
        try:
            os.close(reading)
            ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            confine.install_filter(program)
            out = {}
            for name, attack in attacks.items():
                try:
                    attack()
                    out[name] = "ok"
                except OSError as exc:
                    out[name] = errno.errorcode.get(exc.errno or 0, str(exc))
            os.write(writing, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, str] = json.loads(data)
    return result


def _dissolve(sock: socket.socket) -> None:
    unspec = ctypes.create_string_buffer(16)  # sa_family AF_UNSPEC
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.connect(sock.fileno(), unspec, 16) != 0:
        raise OSError(ctypes.get_errno(), "connect(AF_UNSPEC)")


@pytest.mark.parametrize("profiles", [NETWORK, CHROMIUM | NETWORK], ids=["network", "chromium"])
def test_a_granted_socket_stays_where_it_was_pointed(
    server: socket.socket, profiles: frozenset[SyscallProfile]
) -> None:
    elsewhere = server.getsockname()
    granted = socket.create_connection(elsewhere, timeout=10)  # as the broker makes it
    peer, _ = server.accept()
    waiting = socket.create_connection(elsewhere, timeout=10)  # queued on the server: accept takes it
    fresh = socket.socket()
    fastopen = seccomp.MSG_FASTOPEN
    with granted, peer, waiting, fresh:
        found = _in_child(
            profiles,
            {
                "dissolve": lambda: _dissolve(granted),
                "connect": lambda: granted.connect(elsewhere),
                "connect a new socket": lambda: fresh.connect(elsewhere),
                "sendto fastopen": lambda: granted.sendto(b"x", fastopen, elsewhere),
                "sendmsg fastopen": lambda: granted.sendmsg([b"x"], [], fastopen, elsewhere),
                "sendto": lambda: granted.sendto(b"sent", elsewhere),  # the address is ignored: to the peer
                "sendmsg": lambda: granted.sendmsg([b" and sent"], [], 0, elsewhere),
                "SO_BINDTODEVICE": lambda: granted.setsockopt(
                    socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo"
                ),
                "IP_TTL": lambda: granted.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1),
                "TCP_NODELAY": lambda: granted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                "SO_KEEPALIVE": lambda: granted.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                "bind a new socket": lambda: fresh.bind(("127.0.0.1", 0)),
                "listen": lambda: server.listen(8),
                "accept": server.accept,
                "shutdown": lambda: granted.shutdown(socket.SHUT_WR),
            },
        )
        assert peer.recv(100) == b"sent and sent"
    refused = ["dissolve", "connect", "connect a new socket", "sendto fastopen", "sendmsg fastopen",
               "SO_BINDTODEVICE", "IP_TTL"]  # fmt: skip
    assert {name: found.pop(name) for name in refused} == dict.fromkeys(refused, "EPERM")
    if SyscallProfile.CHROMIUM in profiles:  # its own Unix socket; the broker's are bound already
        assert found.pop("bind a new socket") == found.pop("listen") == "ok"
    else:
        assert found.pop("bind a new socket") == found.pop("listen") == "EPERM"
    assert found == dict.fromkeys(
        ["sendto", "sendmsg", "TCP_NODELAY", "SO_KEEPALIVE", "accept", "shutdown"], "ok"
    )


def _ioctl(sock: socket.socket, request: int) -> None:
    """ioctl(2) with the request as given, all 64 bits (the kernel reads the low 32)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(4096)
    if libc.ioctl(sock.fileno(), ctypes.c_ulong(request), buffer) != 0:
        raise OSError(ctypes.get_errno(), f"ioctl {request:#x}")


SIOCGIFCONF, SIOCGIFADDR, SIOCGIWNAME = 0x8912, 0x8915, 0x8B01


@pytest.mark.parametrize("profiles", [NETWORK, CHROMIUM | NETWORK], ids=["network", "chromium"])
def test_a_granted_socket_cannot_read_the_boxs_interfaces(
    server: socket.socket, profiles: frozenset[SyscallProfile]
) -> None:
    granted = socket.create_connection(server.getsockname(), timeout=10)  # as the broker makes it
    unix, _ = socket.socketpair()
    with granted, unix, _:
        _ioctl(granted, SIOCGIFCONF)  # unconfined, it lists the host's interfaces
        found = _in_child(
            profiles,
            {
                "SIOCGIFCONF": lambda: _ioctl(granted, SIOCGIFCONF),
                "SIOCGIFCONF, high bits set": lambda: _ioctl(granted, 0xFFFFFFFF_00000000 | SIOCGIFCONF),
                "SIOCGIFCONF on a Unix socket": lambda: _ioctl(unix, SIOCGIFCONF),
                "SIOCGIFADDR": lambda: _ioctl(granted, SIOCGIFADDR),
                "SIOCGIWNAME": lambda: _ioctl(granted, SIOCGIWNAME),
                "FIONREAD": lambda: _ioctl(granted, 0x541B),  # what Python and asyncio ask
                "FIONBIO": lambda: granted.setblocking(False),
                "FIOCLEX": lambda: os.set_inheritable(granted.fileno(), False),
                "TCGETS": lambda: _ioctl(granted, 0x5401),  # isatty: the kernel's answer, not the filter's
            },
        )
    refused = ["SIOCGIFCONF", "SIOCGIFCONF, high bits set", "SIOCGIFCONF on a Unix socket", "SIOCGIFADDR",
               "SIOCGIWNAME"]  # fmt: skip
    assert {name: found.pop(name) for name in refused} == dict.fromkeys(refused, "EPERM")
    assert found == {"FIONREAD": "ok", "FIONBIO": "ok", "FIOCLEX": "ok", "TCGETS": "ENOTTY"}
