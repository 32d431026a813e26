"""A function that attacks the box it runs on, one entry point per attack; and a pinger.

Each entry point tries something a box must not allow and reports what happened, so
the test can assert on the outcome; some are stopped by the box killing the instance.
PING is a well-behaved function whose round trips (:func:`ping_round_trips`) show
whether the box keeps serving under attack (tests/e2e/test_hostile.py,
bench/hostile_latency.py).
"""

from __future__ import annotations

import asyncio
import time

from bento.client.stream import SessionStream


async def ping_round_trips(stream: SessionStream, count: int, pause: float = 0.1) -> list[float]:
    """``count`` round trips through a PING session, in milliseconds."""
    out = []
    for i in range(count):
        started = time.perf_counter()
        await stream.send(f"{i}\n")
        reply = await asyncio.wait_for(stream.receive(), 60)
        assert reply == f"{i}\n".encode(), reply
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(pause)
    return out


HOSTILE = r'''
import ctypes
import errno
import os
import signal
import socket

from bento.runtime import api

libc = ctypes.CDLL(None, use_errno=True)


def _outcome(action):
    try:
        value = action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"ALLOWED: {value!r}"[:200]


def _syscall(number, *args):
    result = libc.syscall(number, *[ctypes.c_long(a) for a in args])
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def read_files(paths):
    return {p: _outcome(lambda p=p: open(p, "rb").read(16)) for p in paths}


def write_files(paths):
    return {p: _outcome(lambda p=p: open(p, "wb").write(b"x")) for p in paths}


def fill_scratch():
    written = 0
    try:
        with open("/tmp/fill", "wb") as out:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
                written += 1 << 20
    except OSError as exc:
        return {"written": written, "error": errno.errorcode.get(exc.errno, str(exc.errno))}


def fork_bomb():
    children = 0
    try:
        while children < 10_000:
            if os.fork() == 0:
                signal.pause()
                os._exit(0)
            children += 1
    except OSError as exc:
        return {"children": children, "error": errno.errorcode.get(exc.errno, str(exc.errno))}
    return {"children": children, "error": None}


def memory_bomb():
    hoard = []
    while True:
        hoard.append(bytearray(16 << 20))


def spin():
    while True:
        pass


def sleep_forever():
    import time
    time.sleep(3600)


def flood():
    while True:
        api.send(b"x" * (1 << 16))


def sockets():
    return {
        "packet": _outcome(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
        "raw": _outcome(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
        "netlink": _outcome(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)),
        # if_nameindex() needs a netlink socket, itself refused: ask /proc instead.
        "interfaces": [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]],
    }


def reach(targets):
    """Try each (host, port) directly (no broker) and through the broker."""
    out = {}
    for host, port in targets:
        def direct(host=host, port=port):
            import _socket  # the kernel's own socket: bento's runtime routes socket.socket's connect
            s = _socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect((host, port))
            return "connected"
        out[f"direct {host}:{port}"] = _outcome(direct)
        brokered = lambda host=host, port=port: api.connect(host, port, timeout=5)  # noqa: E731
        out[f"broker {host}:{port}"] = _outcome(brokered)
    return out


def fetch(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def privileges(server_pid):
    return {
        "kill server": _outcome(lambda: os.kill(server_pid, signal.SIGTERM)),
        "ptrace init": _outcome(lambda: _syscall(101, 16, 1, 0, 0)),  # PTRACE_ATTACH pid 1
        "mount": _outcome(lambda: _syscall(165, 0, 0, 0, 0, 0)),
        "unshare user": _outcome(lambda: _syscall(272, 0x10000000)),
        "setns": _outcome(lambda: _syscall(308, 0, 0)),
        "setuid 0": _outcome(lambda: os.setuid(0)),
        "init_module": _outcome(lambda: _syscall(175, 0, 0, 0)),
        "finit_module": _outcome(lambda: _syscall(313, 0, 0, 0)),
        "keyctl": _outcome(lambda: _syscall(250, 0, 0, 0, 0, 0)),
        "bpf": _outcome(lambda: _syscall(321, 0, 0, 0)),
        "chroot": _outcome(lambda: os.chroot("/tmp")),
        "uid": os.getuid(),
    }


def devices():
    names = ["/dev/mem", "/dev/kmsg", "/dev/sda", "/dev/vda", "/dev/kvm", "/dev/net/tun", "/dev/null"]
    return {d: _outcome(lambda d=d: open(d, "rb").read(1)) for d in names}


def proc_root():
    return {
        "listing": sorted(os.listdir("/proc/1/root")),
        "shadow": _outcome(lambda: open("/proc/1/root/etc/shadow", "rb").read(1)),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }


def descriptors():
    listing = os.listdir("/proc/self/fd")
    return {fd: _outcome(lambda fd=fd: os.readlink(f"/proc/self/fd/{fd}")) for fd in listing}


def open_files():
    held = []
    try:
        while len(held) < 100_000:
            held.append(open("/dev/null", "rb"))
    except OSError as exc:
        return {"opened": len(held), "error": errno.errorcode.get(exc.errno, str(exc.errno))}
    return {"opened": len(held), "error": None}
'''

PING = r"""
from bento.runtime import api

def ping():
    while (data := api.recv()) is not None:
        api.send(data)
"""
