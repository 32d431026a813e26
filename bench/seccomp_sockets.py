"""What the seccomp filter costs a function's bytes: a granted TCP connection, with and without it.

A socket the broker grants stays where it was pointed because every sandbox's filter
refuses connect, MSG_FASTOPEN and most socket options (bento.sandbox.seccomp); the
function still reads and writes the socket itself, so no byte is copied by anyone else.
The filter's one cost is its program, run at every system call. Measured here in a
forked process that holds a loopback TCP connection: without a filter, under the same
allow-list with connect, bind, listen, sends and socket options unchecked (as before
sockets were narrowed), and under the filter of a function with the network profile (the
program the runtime installs): small sends (one system call each way per message) and a
bulk stream (256 KiB per send, read by a thread of the same process, as a relay would).

    python bench/seccomp_sockets.py [--runs 5] [--messages 100000] [--megabytes 512]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import socket
import tempfile
import threading
import time

import pyseccomp

from bento.protocol.policy import SyscallProfile
from bento.runtime import confine
from bento.sandbox import seccomp
from record import record, summary

CHUNK = 256 << 10
PROFILES = frozenset({SyscallProfile.COMPUTE, SyscallProfile.NETWORK})
# clone and socket too: the filter allows them with their arguments checked (threads; families).
UNCHECKED = {"connect", "bind", "listen", "sendto", "sendmsg", "sendmmsg", "setsockopt", "clone", "socket"}


def _unchecked() -> bytes:
    """The same allow-list with the socket calls allowed whatever their arguments."""
    flt = pyseccomp.SyscallFilter(defaction=pyseccomp.ERRNO(errno.EPERM))
    for name in sorted(seccomp.allowed_calls(PROFILES, allow_exec=False) | UNCHECKED):
        with contextlib.suppress(RuntimeError, ValueError, OSError):  # not a call on this architecture
            flt.add_rule(pyseccomp.ALLOW, name)
    flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")  # as the filter does: libc falls back to clone
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


def _pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    return client, peer


def _measure(program: bytes | None, messages: int, megabytes: int) -> dict[str, float]:
    """In a child: (ns per 64-byte message there and back, MiB/s of a bulk stream)."""
    client, peer = _pair()
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if program is not None:
                ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
                confine.install_filter(program)
            started = time.perf_counter_ns()
            for _ in range(messages):
                client.send(b"m" * 64)
                peer.recv(64)
            small = (time.perf_counter_ns() - started) / messages
            total = megabytes << 20
            # A thread made after the filter: it runs under it too.
            reader = threading.Thread(target=lambda: _drain(peer, total))
            started = time.perf_counter_ns()
            reader.start()
            chunk = b"b" * CHUNK
            for _ in range(total // CHUNK):
                client.sendall(chunk)
            reader.join()
            bulk = megabytes / ((time.perf_counter_ns() - started) / 1e9)
            os.write(writing, json.dumps({"small": small, "bulk": bulk}).encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    client.close()
    peer.close()
    result: dict[str, float] = json.loads(data)
    return result


def _drain(sock: socket.socket, total: int) -> None:
    left = total
    while left:
        left -= len(sock.recv(min(left, 1 << 20)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--megabytes", type=int, default=512)
    args = parser.parse_args()
    programs = {
        "without a filter": None,
        "unchecked socket calls": _unchecked(),
        "the filter": seccomp.compile_filter(PROFILES, allow_exec=False),
    }
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in programs}
    load_at_start = os.getloadavg()[0]
    for run in range(args.runs):  # alternating, so that the host's load falls on all alike
        for name, filter_program in programs.items():
            found = _measure(filter_program, args.messages, args.megabytes)
            for key, value in found.items():
                figures[name].setdefault(key, []).append(value)
        print(f"run {run + 1}: " + ", ".join(f"{n} {figures[n]['bulk'][-1]:.0f} MiB/s" for n in figures))
    lines = [
        "A loopback TCP connection held by a forked process: without a seccomp filter, under the same",
        "allow-list with connect, bind, listen, sends and socket options unchecked (as before), and under",
        "the filter of a function with the network profile (connect, bind, listen, MSG_FASTOPEN and most",
        "socket options refused). No byte is copied by the broker or anyone else in any of them.",
        "",
    ]
    for name in figures:
        lines.append(f"- {name}: 64-byte message there and back "
                     f"{summary([v / 1000 for v in figures[name]['small']], 'µs')}; "
                     f"bulk stream of 256 KiB sends {summary(figures[name]['bulk'], 'MiB/s')}")  # fmt: skip
    lines.append(
        f"- load average (1 min) at start and end: {load_at_start:.1f}, {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (the spread is the host's: the whole filter is "
        f"{len(programs['the filter'] or b'') // 8} BPF instructions, of which a system call runs a part)"
    )
    record(
        "Seccomp filter cost on a granted socket",
        f"python bench/seccomp_sockets.py --runs {args.runs} --messages {args.messages} "
        f"--megabytes {args.megabytes}",
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
