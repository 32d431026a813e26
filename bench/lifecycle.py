"""The Bento box lifecycle: latency to first output, streaming throughput, and memory.

Starts one testnet with a Bento box on relay exit0 and measures, on that one network:

1. upload -> first output byte: deploy a small hello module, invoke it, attach, and
   wait for its first output chunk; over Tor (the box's onion service) and directly
   (the server's local API port, no Tor).
2. invoke -> first output byte: the same for a function already deployed.
3. throughput: a function streams N MiB (random bytes, in api.send chunks) through the
   box over Tor, read at the client, against a plain TCP stream of the same size served
   as an ephemeral v3 onion service on the same relay (exit0) and read through the same
   SOCKS port, so that both are onion-service circuits to that relay. Two ways: the
   box's own onion vs. a TCP onion, each transfer on a fresh circuit; and one onion
   service carrying both (port 80: the box's API, 81: TCP), a pair on one circuit.
   Box and TCP alternate; the box is also measured without Tor.
4. memory: the server's RSS idle after start and after a number of sessions, and the
   USS (private memory) of an instance blocked in api.recv().

Latencies are measured with a warm client: the Box's HTTP connection and the Tor client's
rendezvous circuit to the box already exist (as for a user who has just deployed).

    python bench/lifecycle.py [--runs 10] [--megabytes 50] [--chunk-kib 256] [--throughput-runs 3]
                              [--sessions 10] [--idle-instances 5]

Takes about 5 minutes on 2 cores (the testnet start included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import socketserver
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from python_socks.async_.asyncio import Proxy

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.client.stream import SessionStream
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.testnet import Node, Testnet, TestnetConfig
from bento.testnet.boxes import server_status
from bento.tor import control
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
def onion_service(node: Node, ports: dict[int, int]) -> Iterator[str]:
    """An ephemeral v3 onion service on ``node``'s tor: virtual port -> 127.0.0.1 port."""
    ctl = control.connect(node.control_address)
    try:
        service = ctl.create_ephemeral_hidden_service(
            ports, key_type="NEW", key_content="ED25519-V3", await_publication=True, timeout=120
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


async def tcp_stream(socks: str, onion: str, port: int, total: int) -> tuple[float, float]:
    rate = Rate(time.perf_counter())
    proxy = Proxy.from_url(f"socks5://{socks}")
    sock = await proxy.connect(dest_host=f"{onion}.onion", dest_port=port, timeout=120)
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


async def reach(socks: str, onion: str, port: int) -> None:
    """A small TCP transfer, retried: fetches a new onion's descriptor and builds the circuit."""
    for attempt in range(10):
        try:
            await tcp_stream(socks, onion, port, 64 << 10)
            return
        except Exception as exc:
            if attempt == 9:
                raise
            print(f"{onion}.onion not reachable yet ({type(exc).__name__}: {exc}); retrying")
            await asyncio.sleep(3)


Rates = tuple[float, float]  # (streaming MiB/s, end-to-end MiB/s)


async def throughput(
    *,
    socks: str,
    box_onion: str,
    deployment: Deployment,
    tcp_onion: str,
    shared_onion: str,
    direct: Box,
    server_pid: int,
    total: int,
    chunk: int,
    runs: int,
) -> dict[str, list[Any]]:
    """(box, TCP) pairs of transfers, two ways, each pair on circuits of its own.

    "separate": the box's own onion service vs. the TCP onion, each transfer on a fresh
    circuit. "shared": one onion service on the box's relay with the box's API on port 80
    and the TCP sender on port 81, both transfers of a pair on the same (warm) circuit.
    Distinct SOCKS credentials give distinct circuits (Tor's IsolateSOCKSAuth). Also: the
    box without Tor ("direct"), and the server's CPU time per MiB of box transfers.
    """
    server_cpu = 0.0

    async def box_on(circuit: str, base_url: str | None = None) -> Rates:
        nonlocal server_cpu
        async with Box(box_onion, socks=f"{circuit}:x@{socks}", base_url=base_url) as box:
            before = cpu_seconds(server_pid)
            rates = await box_stream(box, deployment, total, chunk)
            server_cpu += cpu_seconds(server_pid) - before
            return rates

    await reach(socks, tcp_onion, 80)
    await reach(socks, shared_onion, 81)
    figures: dict[str, list[Any]] = {"separate": [], "shared": [], "direct": []}
    for run in range(runs):
        figures["direct"].append((await box_stream(direct, deployment, total, chunk))[0])
        print(f"throughput run {run + 1} (direct, no Tor): box {figures['direct'][-1]:.2f} MiB/s")
        for way in ("separate", "shared"):
            circuit = f"bench-{way}-{run}"
            if way == "separate":
                box_go = functools.partial(box_on, f"{circuit}-box")
                tcp_go = functools.partial(tcp_stream, f"{circuit}-tcp:x@{socks}", tcp_onion, 80, total)
            else:
                await reach(f"{circuit}:x@{socks}", shared_onion, 81)
                box_go = functools.partial(box_on, circuit, base_url=f"http://{shared_onion}.onion")
                tcp_go = functools.partial(tcp_stream, f"{circuit}:x@{socks}", shared_onion, 81, total)
            if run % 2:  # alternate which of the pair goes first
                tcp_rates = await tcp_go()
                box_rates = await box_go()
            else:
                box_rates = await box_go()
                tcp_rates = await tcp_go()
            figures[way].append((box_rates, tcp_rates))
            print(
                f"throughput run {run + 1} ({way}): box {box_rates[0]:.2f} MiB/s, "
                f"tcp {tcp_rates[0]:.2f} MiB/s, ratio {box_rates[0] / tcp_rates[0]:.2f}"
            )
    figures["server_ms_per_mib"] = [server_cpu * 1000 / (2 * runs * total / MIB)]
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _parents() -> dict[int, int]:
    """pid -> ppid for every process."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    return parents


def children(pid: int) -> list[int]:
    return [child for child, parent in _parents().items() if parent == pid]


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents = _parents()
    found = [pid]
    for member in found:
        found += [child for child, parent in parents.items() if parent == member]
    return found


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


async def sessions_then_rss(box: Box, deployment: Deployment, server_pid: int, count: int) -> float:
    for _ in range(count):
        await invoke_to_first_byte(box, deployment, time.perf_counter())
    await asyncio.sleep(1.0)  # let the instances be reaped
    return rss_mib(server_pid)


async def idle_instances(
    box: Box, deployment: Deployment, server_pid: int, count: int
) -> tuple[list[float], list[float], str]:
    """USS of ``count`` instances blocked in api.recv(): (Python process, whole tree, its processes).

    An instance is a child of the server (with a sandbox: bwrap or a wrapper that execs it,
    with the function's Python below); the tree counts every process of the instance.
    """
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
        roots = [pid for pid in children(server_pid) if pid not in before]
        if len(roots) != count:
            raise RuntimeError(f"found {len(roots)} new instance processes, expected {count}")
        pythons: list[float] = []
        trees: list[float] = []
        shape = ""
        for root in roots:
            members = tree(root)
            python = [pid for pid in members if comm(pid).startswith("python")]
            if len(python) != 1:
                raise RuntimeError(f"instance {root}: expected one Python process, found {python}")
            pythons.append(uss_mib(python[0]))
            trees.append(sum(uss_mib(pid) for pid in members))
            shape = " > ".join(comm(pid) for pid in members)
        return pythons, trees, shape
    finally:
        # Newest first: each stream's WebSocket holds an anyio cancel scope entered in this
        # task, and scopes must be left in the reverse order of entering them (closing the
        # oldest first cancelled this task and lost every figure of the run).
        for stream in reversed(streams):
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
        python, whole, shape = await idle_instances(direct, deployment, server_pid, args.idle_instances)
        results["uss_python"], results["uss_tree"], results["instance_shape"] = python, whole, shape
        print(
            f"server RSS idle {results['rss_idle']:.1f} MiB, after {args.sessions} sessions "
            f"{results['rss_sessions']:.1f} MiB; idle instance USS (Python) "
            + ", ".join(f"{u:.1f}" for u in python)
            + " MiB, (whole instance) "
            + ", ".join(f"{u:.1f}" for u in whole)
            + " MiB"
        )
        results["latency"] = await latencies({"tor": tor, "direct": direct}, deployment, args.runs)
        api_port = int(str(status["api"]).rpartition(":")[2])
        with (
            tcp_sender() as port,
            onion_service(node, {80: port}) as tcp_onion,
            onion_service(node, {80: api_port, 81: port}) as shared_onion,
        ):
            results["throughput"] = await throughput(
                socks=net.socks_address,
                box_onion=onion,
                deployment=deployment,
                tcp_onion=tcp_onion,
                shared_onion=shared_onion,
                direct=direct,
                server_pid=server_pid,
                total=args.megabytes * MIB,
                chunk=args.chunk_kib << 10,
                runs=args.throughput_runs,
            )
        session_id = await direct.invoke(deployment, "hello", ["compression"])
        async with await direct.attach(deployment, session_id) as stream:
            response = stream.link.raw.response  # the upgrade's answer: what the box agreed to
            negotiated = response.headers.get("sec-websocket-extensions", "") if response else ""
            await drain(stream)
        results["ws_extensions"] = negotiated or "none"
        await direct.shutdown(deployment)
        await asyncio.sleep(1.0)
        results["rss_end"] = rss_mib(server_pid)
    return results


def revision() -> str:
    """The commit measured, and whether src/ differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *argv], capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted changes in src/" if git("status", "--porcelain", "--", "src") else "")


def report(results: dict[str, object], args: argparse.Namespace, command: str) -> None:
    latency: dict[str, dict[str, list[float]]] = results["latency"]  # type: ignore[assignment]
    rates: dict[str, list[Any]] = results["throughput"]  # type: ignore[assignment]
    uss_python: list[float] = results["uss_python"]  # type: ignore[assignment]
    uss_tree: list[float] = results["uss_tree"]  # type: ignore[assignment]

    def ms(samples: list[float]) -> str:
        return summary([s * 1000 for s in samples], "ms")

    def pairs(way: str) -> tuple[str, float]:
        box, tcp = [p[0][0] for p in rates[way]], [p[1][0] for p in rates[way]]
        ratio = statistics.median(box) / statistics.median(tcp)
        each = ", ".join(f"{b / t:.2f}" for b, t in zip(box, tcp, strict=True))
        text = (
            f"  - box: {summary(box, 'MiB/s')}\n  - TCP: {summary(tcp, 'MiB/s')}\n"
            f"  - box / TCP: **{ratio:.2f}** (median over median; per pair {each})"
        )
        return text, ratio

    separate, _ = pairs("separate")
    shared, ratio = pairs("shared")
    e2e = statistics.median(p[0][1] for p in rates["shared"]) / statistics.median(
        p[1][1] for p in rates["shared"]
    )
    verdict = "meets" if ratio >= 0.9 else "MISSES"
    body = f"""\
- code: {revision()}

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

Throughput over Tor: {args.megabytes} MiB per transfer, MiB/s from the first to the last byte
at the client. Box: a function streams random bytes in {args.chunk_kib} KiB api.send chunks, read
with the client library. TCP: a plain TCP sender on 127.0.0.1 (a thread of the benchmark), read
through the same SOCKS port. Pairs alternate which goes first; each pair gets circuits of its own
(SOCKS isolation).

- separate onion services on exit0 (the box's own; an ephemeral one for TCP), a fresh
  circuit per transfer:
{separate}
- one ephemeral onion service on exit0 (port 80: the box's API, port 81: TCP), both
  transfers of a pair on the same circuit (the fair comparison):
{shared}
  - including set-up (invoke + attach vs. SOCKS connect): {e2e:.2f}
- target box / TCP >= 0.9 (same circuit): {verdict} it
- the box without Tor (direct), same transfer: {summary(rates["direct"], "MiB/s")}
- server CPU per MiB of box transfers over Tor: {rates["server_ms_per_mib"][0]:.1f} ms; \
session WebSocket extensions negotiated: {results["ws_extensions"]}

Memory (the box's server process, and its instances):

- server RSS idle after start: {results["rss_idle"]:.1f} MiB
- server RSS after {args.sessions} more sessions (ended, still retained): {results["rss_sessions"]:.1f} MiB
- server RSS at the end of this run (all of the above; function shut down): {results["rss_end"]:.1f} MiB
- idle instance USS (blocked in api.recv(); USS = Private_Clean + Private_Dirty of
  smaps_rollup), {len(uss_python)} instances at once:
  - its Python process: {summary(uss_python, "MiB")}
  - the whole instance ({results["instance_shape"]}): {summary(uss_tree, "MiB")}
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
