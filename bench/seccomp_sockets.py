"""What the seccomp filter costs a function's bytes: a granted TCP connection, with and without it.

A socket the broker grants stays where it was pointed because every sandbox's filter
refuses connect, MSG_FASTOPEN and most socket options (bento.sandbox.seccomp); the
function still reads and writes the socket itself, so no byte is copied by anyone else.
The filter's one cost is its program, run at every system call. Measured here in a
forked process that holds a loopback TCP connection, first without a filter and then
under the filter of a function with the network profile (the same program the runtime
installs): small sends (one system call each way per message) and a bulk stream
(256 KiB per send, read by a thread of the same process, as a function that relays).

    python bench/seccomp_sockets.py [--runs 5] [--messages 100000] [--megabytes 512]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import threading
import time

from bento.protocol.policy import SyscallProfile
from bento.runtime import confine
from bento.sandbox import seccomp
from record import record, summary

CHUNK = 256 << 10


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
    program = seccomp.compile_filter({SyscallProfile.COMPUTE, SyscallProfile.NETWORK}, allow_exec=False)
    figures: dict[str, dict[str, list[float]]] = {"without": {}, "with": {}}
    for run in range(args.runs):  # alternating, so that the host's load falls on both alike
        for name, filter_program in (("without", None), ("with", program)):
            found = _measure(filter_program, args.messages, args.megabytes)
            for key, value in found.items():
                figures[name].setdefault(key, []).append(value)
        print(f"run {run + 1}: " + ", ".join(f"{n} {figures[n]['bulk'][-1]:.0f} MiB/s" for n in figures))
    lines = [
        "A loopback TCP connection held by a forked process, without a seccomp filter and under the",
        "filter of a function with the network profile (connect, bind, listen, MSG_FASTOPEN and most",
        "socket options refused; no byte is copied by the broker or anyone else):",
        "",
    ]
    for name in figures:
        lines.append(f"- {name} the filter: 64-byte message there and back "
                     f"{summary([v / 1000 for v in figures[name]['small']], 'µs')}; "
                     f"bulk stream of 256 KiB sends {summary(figures[name]['bulk'], 'MiB/s')}")  # fmt: skip
    record(
        "Seccomp filter cost on a granted socket",
        f"python bench/seccomp_sockets.py --runs {args.runs} --messages {args.messages} "
        f"--megabytes {args.megabytes}",
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
