"""The Bento box lifecycle: latency to first output, streaming throughput, and memory.

Starts one testnet with a Bento box on relay exit0 and measures, on that one network:

1. upload -> first output byte: deploy a small hello module, invoke it, attach, and
   wait for its first output chunk; over Tor (the box's onion service) and directly
   (the server's local API port, no Tor).
2. invoke -> first output byte: the same for a function already deployed.
3. throughput: a function streams N MiB (random bytes, in api.send chunks) through the
   box over Tor, read at the client; divided by a plain TCP stream of the same size
   served as an ephemeral v3 onion service on the same relay (exit0) and read through
   the same SOCKS port, so that both paths are onion-service circuits to that relay.
   The two are alternated.
4. memory: the server's RSS idle after start and after a number of sessions, and the
   USS (private memory) of an instance blocked in api.recv().

Latencies are measured with a warm client: the Box's HTTP connection and the Tor client's
rendezvous circuit to the box already exist (as for a user who has just deployed).

    python bench/lifecycle.py [--runs 10] [--megabytes 50] [--chunk-kib 256] [--throughput-runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socketserver
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from python_socks.async_.asyncio import Proxy

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.client.stream import SessionStream
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.tor import control
from bento.tor.testnet import Node, Testnet, TestnetConfig
from bento.tor.testnet.boxes import server_status
from record import record, summary

MIB = 1 << 20

HELLO = b"""\
from bento.runtime import api


def hello(name):
    api.send(f"hello {name}\\n")
    return "ok"
"""

BENCH = b'''\
"""Functions for bench/lifecycle.py."""

import os

from bento.runtime import api


def hello(name):
    api.send(f"hello {name}\\n")
    return "ok"


def stream(total, chunk):
    # Random bytes: the session's WebSocket may compress, and must not get an easy ride.
    # One block, repeated: its repeats are farther apart than deflate's 32 KiB window.
    block = os.urandom(chunk)
    sent = 0
    while sent < total:
        piece = block[: total - sent]
        api.send(piece)
        sent += len(piece)
    return sent


def idle():
    api.send(b"ready")
    api.recv()
    return "ok"
'''


# --- the client side of a session -----------------------------------------------------


async def drain(stream: SessionStream) -> int:
    """Read the rest of a session; check that it completed; return the bytes read."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
    ended = stream.ended
    if ended is None or ended.state is not SessionState.COMPLETED:
        raise RuntimeError(f"session {stream.session_id} did not complete: {ended}")
    return received


async def invoke_to_first_byte(box: Box, deployment: Deployment, started: float) -> float:
    """Invoke hello, attach, wait for the first chunk: seconds since ``started``; then finish."""
    session_id = await box.invoke(deployment, "hello", ["bench"])
    async with await box.attach(deployment, session_id) as stream:
        first = await stream.receive()
        elapsed = time.perf_counter() - started
        if not first:
            raise RuntimeError(f"session {session_id} ended without output")
        await drain(stream)
    return elapsed


async def upload_to_first_byte(box: Box, run: int) -> float:
    started = time.perf_counter()
    source = HELLO + f"# run {run}\n".encode()  # a distinct upload each time
    deployment = await box.deploy(source, Manifest(name="bench-hello"))
    elapsed = await invoke_to_first_byte(box, deployment, started)
    await box.shutdown(deployment)
    return elapsed


async def latencies(
    boxes: dict[str, Box], deployment: Deployment, runs: int
) -> dict[str, dict[str, list[float]]]:
    """upload -> first byte and invoke -> first byte, per path, the paths interleaved."""
    for box in boxes.values():  # warm-up, not counted: connections, circuits, page cache
        await upload_to_first_byte(box, -1)
        await invoke_to_first_byte(box, deployment, time.perf_counter())
    figures: dict[str, dict[str, list[float]]] = {"upload": {}, "invoke": {}}
    for run in range(runs):
        for path, box in boxes.items():
            figures["upload"].setdefault(path, []).append(await upload_to_first_byte(box, run))
            started = time.perf_counter()
            figures["invoke"].setdefault(path, []).append(
                await invoke_to_first_byte(box, deployment, started)
            )
        print(
            f"latency run {run + 1}: "
            + ", ".join(
                f"{kind} {path} {figures[kind][path][-1] * 1000:.0f} ms" for kind in figures for path in boxes
            )
        )
    return figures


# --- throughput -------------------------------------------------------------------------


class _Sender(socketserver.BaseRequestHandler):
    """Reads a decimal byte count and a newline, then sends that many random bytes."""

    block = os.urandom(256 << 10)

    def handle(self) -> None:
        line = b""
        while not line.endswith(b"\n"):
            data = self.request.recv(64)
            if not data:
                return
            line += data
        remaining = int(line)
        while remaining:
            piece = self.block[:remaining]
            self.request.sendall(piece)
            remaining -= len(piece)


@contextlib.contextmanager
def tcp_sender() -> Iterator[int]:
    """A plain TCP server on 127.0.0.1 (in a thread of this process); yields its port."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Sender)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def onion_service(node: Node, port: int) -> Iterator[str]:
    """An ephemeral v3 onion service on ``node``'s tor pointing at 127.0.0.1:port."""
    ctl = control.connect(node.control_address)
    try:
        service = ctl.create_ephemeral_hidden_service(
            {80: port},
            key_type="NEW",
            key_content="ED25519-V3",
            await_publication=True,
            timeout=120,
        )
        try:
            yield str(service.service_id)
        finally:
            ctl.remove_ephemeral_hidden_service(service.service_id)
    finally:
        ctl.close()


class Rate:
    """Bytes over time, from the first byte received to the last, and from the request."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first = 0.0
        self.first_bytes = 0
        self.received = 0

    def add(self, size: int) -> None:
        if not self.received:
            self.first, self.first_bytes = time.perf_counter(), size
        self.received += size

    def done(self, expected: int) -> tuple[float, float]:
        """(streaming MiB/s, end-to-end MiB/s)."""
        last = time.perf_counter()
        if self.received != expected:
            raise RuntimeError(f"received {self.received} bytes, expected {expected}")
        streaming = (self.received - self.first_bytes) / (last - self.first) / MIB
        return streaming, self.received / (last - self.started) / MIB


async def box_stream(box: Box, deployment: Deployment, total: int, chunk: int) -> tuple[float, float]:
    rate = Rate(time.perf_counter())
    session_id = await box.invoke(deployment, "stream", [total, chunk])
    async with await box.attach(deployment, session_id) as stream:
        async for data in stream:
            rate.add(len(data))
        if stream.ended is None or stream.ended.state is not SessionState.COMPLETED:
            raise RuntimeError(f"the stream session did not complete: {stream.ended}")
    return rate.done(total)


async def tcp_stream(socks: str, onion: str, total: int) -> tuple[float, float]:
    rate = Rate(time.perf_counter())
    sock = await Proxy.from_url(f"socks5://{socks}").connect(
        dest_host=f"{onion}.onion", dest_port=80, timeout=120
    )
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"%d\n" % total)
        await writer.drain()
        while data := await reader.read(MIB):
            rate.add(len(data))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return rate.done(total)


async def throughput(
    box: Box, deployment: Deployment, socks: str, onion: str, total: int, chunk: int, runs: int
) -> dict[str, list[tuple[float, float]]]:
    for attempt in range(10):  # warm-up: the new onion's descriptor and both circuits
        try:
            await tcp_stream(socks, onion, MIB)
            break
        except Exception as exc:
            print(f"warm-up of the TCP onion failed ({type(exc).__name__}: {exc}); retrying")
            if attempt == 9:
                raise
            await asyncio.sleep(3)
    await box_stream(box, deployment, MIB, chunk)
    figures: dict[str, list[tuple[float, float]]] = {"box": [], "tcp": []}
    for run in range(runs):
        figures["box"].append(await box_stream(box, deployment, total, chunk))
        figures["tcp"].append(await tcp_stream(socks, onion, total))
        box_rate, tcp_rate = figures["box"][-1][0], figures["tcp"][-1][0]
        print(
            f"throughput run {run + 1}: box {box_rate:.2f} MiB/s, tcp {tcp_rate:.2f} MiB/s, "
            f"ratio {box_rate / tcp_rate:.2f}"
        )
    return figures


# --- memory ---------------------------------------------------------------------------


def _proc_kib(path: Path, fields: tuple[str, ...]) -> int:
    total = 0
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            total += int(value.split()[0])  # "1234 kB"
    return total


def rss_mib(pid: int) -> float:
    return _proc_kib(Path(f"/proc/{pid}/status"), ("VmRSS",)) / 1024


def uss_mib(pid: int) -> float:
    return _proc_kib(Path(f"/proc/{pid}/smaps_rollup"), ("Private_Clean", "Private_Dirty")) / 1024


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


async def sessions_then_rss(box: Box, deployment: Deployment, server_pid: int, count: int) -> float:
    for _ in range(count):
        await invoke_to_first_byte(box, deployment, time.perf_counter())
    await asyncio.sleep(1.0)  # let the instances be reaped
    return rss_mib(server_pid)


async def idle_instances(box: Box, deployment: Deployment, server_pid: int, count: int) -> list[float]:
    """USS of ``count`` instances, each blocked in api.recv()."""
    before = set(children(server_pid))
    streams = []
    try:
        for _ in range(count):
            session_id = await box.invoke(deployment, "idle")
            stream = await box.attach(deployment, session_id)
            streams.append(stream)
            if await stream.receive() != b"ready":
                raise RuntimeError("the idle function did not say it was ready")
        await asyncio.sleep(0.5)  # blocked in recv() by now
        instances = [pid for pid in children(server_pid) if pid not in before]
        if len(instances) != count:
            raise RuntimeError(f"found {len(instances)} new instance processes, expected {count}")
        return [uss_mib(pid) for pid in instances]
    finally:
        for stream in streams:
            await stream.close_input()
            await drain(stream)
            await stream.close()


# --- the run ----------------------------------------------------------------------------


async def measure(net: Testnet, args: argparse.Namespace) -> dict[str, object]:
    node = net.state.boxes[0]
    status = server_status(node)
    server_pid = int(str(status["pid"]))
    onion = node.bento_onion
    assert onion is not None
    results: dict[str, object] = {"rss_idle": rss_mib(server_pid)}
    tor = Box(onion, socks=net.socks_address)
    direct = Box(onion, socks=None, base_url=f"http://{status['api']}")
    async with tor, direct:
        deployment = await direct.deploy(BENCH, Manifest(name="bench"))
        results["rss_sessions"] = await sessions_then_rss(direct, deployment, server_pid, args.sessions)
        results["uss_idle"] = await idle_instances(direct, deployment, server_pid, args.idle_instances)
        print(
            f"server RSS idle {results['rss_idle']:.1f} MiB, after {args.sessions} sessions "
            f"{results['rss_sessions']:.1f} MiB; idle instance USS "
            + ", ".join(f"{u:.1f}" for u in results["uss_idle"])  # type: ignore[attr-defined]
            + " MiB"
        )
        results["latency"] = await latencies({"tor": tor, "direct": direct}, deployment, args.runs)
        with tcp_sender() as port, onion_service(node, port) as tcp_onion:
            results["throughput"] = await throughput(
                tor,
                deployment,
                net.socks_address,
                tcp_onion,
                args.megabytes * MIB,
                args.chunk_kib << 10,
                args.throughput_runs,
            )
        session_id = await direct.invoke(deployment, "hello", ["compression"])
        async with await direct.attach(deployment, session_id) as stream:
            extensions = stream._ws.protocol.extensions
            await drain(stream)
        results["ws_extensions"] = ", ".join(type(e).__name__ for e in extensions) or "none"
        await direct.shutdown(deployment)
        await asyncio.sleep(1.0)
        results["rss_end"] = rss_mib(server_pid)
    return results


def report(results: dict[str, object], args: argparse.Namespace, command: str) -> None:
    latency: dict[str, dict[str, list[float]]] = results["latency"]  # type: ignore[assignment]
    rates: dict[str, list[tuple[float, float]]] = results["throughput"]  # type: ignore[assignment]
    uss: list[float] = results["uss_idle"]  # type: ignore[assignment]

    def ms(samples: list[float]) -> str:
        return summary([s * 1000 for s in samples], "ms")

    box_rates, tcp_rates = [r[0] for r in rates["box"]], [r[0] for r in rates["tcp"]]
    ratios = [b / t for b, t in zip(box_rates, tcp_rates, strict=True)]
    e2e = statistics.median(r[1] for r in rates["box"]) / statistics.median(r[1] for r in rates["tcp"])
    ratio = statistics.median(box_rates) / statistics.median(tcp_rates)
    verdict = "meets" if ratio >= 0.9 else "MISSES"
    body = f"""\
One testnet (3 authorities, 5 relays, 1 client), one Bento box on exit0. "tor": the client
library through the testnet client's SOCKS port to the box's onion service (warm: HTTP
connection and rendezvous circuit already up); "direct": the same server at its local API
port, no Tor.

Upload -> first output byte (deploy a small hello module, invoke, attach, first chunk):

- tor: {ms(latency["upload"]["tor"])}
- direct: {ms(latency["upload"]["direct"])}

Invoke -> first output byte (already deployed: invoke, attach, first chunk):

- tor: {ms(latency["invoke"]["tor"])}
- direct: {ms(latency["invoke"]["direct"])}

Throughput over Tor, {args.megabytes} MiB each, first to last byte at the client, alternated:

- box (function streaming {args.chunk_kib} KiB api.send chunks, random bytes): {summary(box_rates, "MiB/s")}
- plain TCP (ephemeral onion service on exit0, same SOCKS port): {summary(tcp_rates, "MiB/s")}
- box / TCP: {ratio:.2f} (median over median; per pair {", ".join(f"{r:.2f}" for r in ratios)}); \
including set-up (invoke + attach vs SOCKS connect): {e2e:.2f}
- target >= 0.9: {verdict} it
- session WebSocket extensions negotiated: {results["ws_extensions"]}

Memory (the box's server process, and its instances):

- server RSS idle after start: {results["rss_idle"]:.1f} MiB
- server RSS after {args.sessions} more sessions (ended, still retained): {results["rss_sessions"]:.1f} MiB
- server RSS at the end of this run (all of the above; function shut down): {results["rss_end"]:.1f} MiB
- idle instance USS (blocked in api.recv(), Private_Clean + Private_Dirty), \
{len(uss)} instances: {summary(uss, "MiB")}
"""
    record("Bento lifecycle", command, body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="repetitions of each latency")
    parser.add_argument("--megabytes", type=int, default=50, help="MiB per throughput transfer")
    parser.add_argument("--chunk-kib", type=int, default=256, help="size of the function's api.send chunks")
    parser.add_argument("--throughput-runs", type=int, default=3, help="transfers of each kind")
    parser.add_argument("--sessions", type=int, default=10, help="sessions before the second RSS figure")
    parser.add_argument("--idle-instances", type=int, default=5, help="idle instances measured")
    args = parser.parse_args()
    command = (
        f"python bench/lifecycle.py --runs {args.runs} --megabytes {args.megabytes} "
        f"--chunk-kib {args.chunk_kib} --throughput-runs {args.throughput_runs} "
        f"--sessions {args.sessions} --idle-instances {args.idle_instances}"
    )
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        started = time.monotonic()
        config = TestnetConfig(directory=Path(tmp) / "net", bento_boxes=1, owner_pid=os.getpid())
        with Testnet.start(config) as net:
            print(f"testnet with a Bento box up in {time.monotonic() - started:.1f} s")
            results = asyncio.run(measure(net, args))
    report(results, args, command)


if __name__ == "__main__":
    main()
