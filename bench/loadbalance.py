"""LoadBalancer on a testnet: how it scales, absorbs a load step, recovers from a lost replica.

The service takes a fixed service time per request and serves one request at a time per
replica (``--concurrency 1``), so N replicas can serve at most N / service-time requests
a second: the target is at least 0.8 x N times one replica's measured rate. Clients are
closed loops (a request, its answer, the next), each with its own Tor circuit isolation
(SOCKS credentials), as distinct users would be; each request is a new stream to the
service's onion address.

- fixed N: the LoadBalancer with --min N --max N, C x N clients for --seconds (C:
  --clients-per-replica, 4: more than a replica can serve, as 3 clients at the testnet's
  0.6 s per request offer exactly its 5 req/s, and any latency added would read as lost
  capacity); requests/s,
  p50/p99 latency, against N times the one-replica rate;
- load step: --min 1 --max S, idle, then C x S clients at once: the seconds until the
  replicas are all up, and until a 2 s window serves 80% of the fixed-S rate;
- lost replica: S replicas under load, one is killed (its handler calls os._exit): the
  seconds until the rate is back at 80%, and the requests that failed.

    python bench/loadbalance.py [--replicas 1,2,4,8] [--service-ms 200] [--seconds 20]

It starts its own testnet (2 Bento boxes: the LoadBalancer on the first, replicas on the
others), unless --dir names a running one. With --onionbalance, the same clients also load
onionbalance (bench/onionbalance_backends.py) with as many backends, up to its 8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import SessionStream
from bento.functions.loadbalancer import client as lb
from bento.functions.loadbalancer.policy import Settings
from bento.testnet import Testnet, TestnetConfig
from record import HostCPU, record

SERVICE = """
import os
import time

REPLICA = os.urandom(4).hex()
SERVICE_TIME = {seconds}

def handle(conn):
    data = b""
    while not data.endswith(b"\\n"):
        chunk = conn.recv(256)
        if not chunk:
            return
        data += chunk
    if data == b"die\\n":
        os._exit(1)  # the replica's instance dies: the LoadBalancer must replace it
    time.sleep(SERVICE_TIME)
    conn.sendall(REPLICA.encode() + b"\\n")
"""


OB_REACH = 180.0  # seconds for a first answer through onionbalance before giving up


@dataclass
class Load:
    """Closed-loop clients and what they saw: (finish time, latency) of each answer."""

    socks: str
    address: str
    done: list[tuple[float, float]] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)
    served_by: dict[str, int] = field(default_factory=dict)
    first: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first answer

    async def client(self, name: str) -> None:
        proxy = Proxy.from_url(f"socks5://{name}:x@{self.socks}", rdns=True)
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(120):
                    sock = await proxy.connect(self.address, 80, timeout=120)
                    reader, writer = await asyncio.open_connection(sock=sock)
                    try:
                        writer.write(b"work\n")
                        line = (await reader.readline()).strip().decode()
                    finally:
                        writer.close()
                if not line:
                    raise ConnectionError("closed without an answer")
            except (OSError, TimeoutError, ValueError, Exception):
                self.failed.append(time.monotonic())
                await asyncio.sleep(0.2)  # a failed request must not spin
                continue
            now = time.monotonic()
            self.done.append((now, now - started))
            self.first.set()
            self.served_by[line] = self.served_by.get(line, 0) + 1

    @contextlib.asynccontextmanager
    async def running(self, clients: int, tag: str) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self.client(f"{tag}{i}")) for i in range(clients)]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def window(self, start: float, end: float) -> list[float]:
        return [latency for finished, latency in self.done if start <= finished < end]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@contextlib.contextmanager
def testnet(directory: str | None, boxes: int) -> Iterator[Testnet]:
    if directory:
        yield Testnet.attach(Path(directory))
        return
    with tempfile.TemporaryDirectory(prefix="bento-bench-lb-") as tmp:
        config = TestnetConfig(
            directory=Path(tmp) / "net", bento_boxes=boxes, owner_pid=os.getpid(), bootstrap_timeout=300
        )
        with Testnet.start(config) as net:
            yield net


class Seen(list[dict[str, Any]]):
    """The LoadBalancer's events so far; ``news`` is notified at each."""

    def __init__(self) -> None:
        super().__init__()
        self.news = asyncio.Condition()

    async def until(self, ready: Callable[[], bool], limit: float = 600) -> None:
        async with asyncio.timeout(limit), self.news:
            await self.news.wait_for(ready)


class Bench:
    def __init__(self, net: Testnet, box: Box, service: Path, replica_boxes: list[str], per: int) -> None:
        self.net, self.box, self.service, self.replica_boxes = net, box, service, replica_boxes
        self.per = per  # closed-loop clients per replica
        self.keyring = Keyring(service.parent / "keyring.json")

    @contextlib.asynccontextmanager
    async def balancer(self, settings: Settings) -> AsyncIterator[tuple[str, Seen]]:
        """A LoadBalancer with these settings, its address and its events (a live list)."""
        function, stream, address = await lb.start(
            self.box, self.keyring, self.service, settings, self.replica_boxes,
            concurrency=1, idle_seconds=60, lifetime=600,
        )  # fmt: skip
        seen = Seen()

        async def follow(s: SessionStream) -> None:
            async for event in lb.events(s):
                async with seen.news:
                    seen.append({**event, "at": time.monotonic()})
                    seen.news.notify_all()

        follower = asyncio.create_task(follow(stream))
        try:
            yield address, seen
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await self._end(function, stream)

    async def _end(self, function: Deployment, stream: SessionStream) -> None:
        with contextlib.suppress(Exception):
            await self.box.kill(function, stream.session_id)
        await stream.close()


async def ups(seen: Seen, count: int) -> float:
    """When the count-th replica (net of losses) came up (monotonic seconds)."""
    await seen.until(
        lambda: sum(e["event"] == "up" for e in seen) - sum(e["event"] == "lost" for e in seen) >= count
    )
    return float([e["at"] for e in seen if e["event"] == "up"][-1])


async def fixed(bench: Bench, n: int, seconds: float, warmup: float) -> dict[str, float]:
    settings = Settings(minimum=n, maximum=n, high=1e6, low=0.0, start_timeout=300)
    async with bench.balancer(settings) as (address, seen):
        await ups(seen, n)
        load = Load(bench.net.socks_address, address)
        cpu = HostCPU()
        async with load.running(bench.per * n, f"fixed{n}-"):
            await asyncio.sleep(warmup)
            start = time.monotonic()
            cpu.start()
            await asyncio.sleep(seconds)
            cpu.stop()
            latencies = load.window(start, start + seconds)
        failed = sum(start <= t < start + seconds for t in load.failed)
    return {
        "n": n, "rate": len(latencies) / seconds, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
        "failed": failed, "replicas_used": len(load.served_by), "cpu_busy": cpu.busy, "cpu_top": cpu.top(),
    }  # fmt: skip


async def fixed_onionbalance(
    net: Testnet, n: int, seconds: float, warmup: float, service_ms: int, per: int
) -> dict[str, Any]:
    """The same load on onionbalance with ``n`` backends (it must be installed: the bench extra)."""
    from onionbalance_backends import onionbalance

    with tempfile.TemporaryDirectory(prefix="bento-bench-ob-") as tmp:
        async with onionbalance(net, Path(tmp), n, service_ms / 1000) as address:
            load = Load(net.socks_address, address)
            began = time.monotonic()
            async with load.running(per * n, f"ob{n}-"):
                try:
                    async with asyncio.timeout(OB_REACH):  # the frontend's descriptor out and found
                        await load.first.wait()
                except TimeoutError:
                    return {
                        "n": n,
                        "unreachable": OB_REACH,
                        "log": (Path(tmp) / "onionbalance.log").read_text()[-1500:],
                    }
                reachable = time.monotonic() - began
                await asyncio.sleep(warmup)
                start = time.monotonic()
                await asyncio.sleep(seconds)
                latencies = load.window(start, start + seconds)
            failed = sum(start <= t < start + seconds for t in load.failed)
    return {
        "n": n, "rate": len(latencies) / seconds, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
        "failed": failed, "replicas_used": len(load.served_by), "reachable": reachable,
    }  # fmt: skip


async def step(bench: Bench, size: int, target: float) -> dict[str, float]:
    """From idle to 3*size clients: seconds to all replicas up, and to 80% of the fixed rate."""
    settings = Settings(
        minimum=1, maximum=size, high=1.5, low=0.25, up_after=1, down_after=60, start_timeout=300
    )
    async with bench.balancer(settings) as (address, seen):
        await ups(seen, 1)
        load = Load(bench.net.socks_address, address)
        async with load.running(bench.per * size, f"step{size}-"):
            began = time.monotonic()
            all_up = await ups(seen, size) - began
            absorbed = await _until_rate(load, began, 0.8 * target)
    return {"all_up": all_up, "absorbed": absorbed}


async def recover(bench: Bench, size: int, target: float) -> dict[str, float]:
    """``size`` replicas under load; one dies: seconds back to 80% of the rate, failures."""
    settings = Settings(minimum=size, maximum=size, high=1e6, low=0.0, start_timeout=300)
    async with bench.balancer(settings) as (address, seen):
        await ups(seen, size)
        load = Load(bench.net.socks_address, address)
        async with load.running(bench.per * size, f"recover{size}-"):
            await _until_rate(load, time.monotonic(), 0.8 * target)
            writer = await _killer(bench.net.socks_address, address)
            writer.write(b"die\n")
            killed = time.monotonic()
            await seen.until(lambda: any(e["event"] == "lost" for e in seen), 300)
            lost_at = float(next(e["at"] for e in seen if e["event"] == "lost"))
            writer.close()
            replaced = await ups(seen, size) - killed
            back = await _until_rate(load, lost_at, 0.8 * target)
            failed = sum(t >= killed for t in load.failed)
    return {
        "detected": lost_at - killed,
        "replaced": replaced,
        "back": back + (lost_at - killed),
        "failed": failed,
    }


async def _killer(socks: str, address: str, attempts: int = 3) -> asyncio.StreamWriter:
    """A connection to the service that asks its replica to die. Tor may refuse a stream
    (a circuit that failed): nothing was sent then, so it is tried again, on a new circuit."""
    for attempt in range(attempts):
        proxy = Proxy.from_url(f"socks5://killer{attempt}:x@{socks}", rdns=True)
        try:
            sock = await proxy.connect(address, 80, timeout=120)
        except ProxyError:
            if attempt == attempts - 1:
                raise
            continue
        _, writer = await asyncio.open_connection(sock=sock)
        return writer
    raise AssertionError("unreachable")


async def _until_rate(load: Load, since: float, rate: float, window: float = 2.0) -> float:
    """Seconds after ``since`` until a ``window``-second window serves ``rate`` per second."""
    async with asyncio.timeout(600):
        while True:
            now = time.monotonic()
            if now - window >= since and len(load.window(now - window, now)) / window >= rate:
                return now - since
            await asyncio.sleep(0.1)


async def measure(
    net: Testnet, sizes: list[int], service_ms: int, seconds: float, warmup: float, with_ob: bool, per: int
) -> str:
    lb_node, *others = net.state.boxes
    assert lb_node.bento_onion is not None
    replica_boxes = [b.bento_onion for b in others if b.bento_onion] or [lb_node.bento_onion]
    with tempfile.TemporaryDirectory(prefix="bento-bench-lb-svc-") as tmp:
        service = Path(tmp) / "fixed_time.py"
        service.write_text(SERVICE.format(seconds=service_ms / 1000))
        async with Box(lb_node.bento_onion, socks=net.socks_address) as box:
            bench = Bench(net, box, service, replica_boxes, per)
            rows = []
            for n in sizes:
                rows.append(await fixed(bench, n, seconds, warmup))
                print(rows[-1], flush=True)
            one = rows[0]["rate"] if rows[0]["n"] == 1 else float("nan")
            middle = sizes[min(len(sizes) - 1, 2)]
            target = next(r["rate"] for r in rows if r["n"] == middle)
            stepped = await step(bench, middle, target)
            print(stepped, flush=True)
            recovered = await recover(bench, middle, target)
            print(recovered, flush=True)
            ob_rows = []
            for n in sizes if with_ob else []:
                if n <= 8:  # onionbalance v3 takes at most 8 backends
                    ob_rows.append(await fixed_onionbalance(net, n, seconds, warmup, service_ms, per))
                    print("onionbalance", ob_rows[-1], flush=True)
    ideal = 1000 / service_ms
    lines = [
        f"Service time {service_ms} ms, one request at a time per replica (at most {ideal:g} req/s each); "
        f"closed-loop clients, {per} per replica, each its own Tor circuits; {seconds:g} s measured after "
        f"{warmup:g} s of warm-up. LoadBalancer on {lb_node.nickname}, replicas on "
        f"{', '.join(b.nickname for b in others) or lb_node.nickname}.",
        "",
        "| replicas | req/s | x one replica | target 0.8 x N | p50 ms | p99 ms | failed | replicas used "
        "| host CPU busy | most CPU (s, in the window) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        times = r["rate"] / one if one == one else float("nan")
        lines.append(
            f"| {r['n']} | {r['rate']:.2f} | {times:.2f} | {'met' if times >= 0.8 * r['n'] else 'missed'} "
            f"| {r['p50'] * 1000:.0f} | {r['p99'] * 1000:.0f} | {r['failed']} | {r['replicas_used']} "
            f"| {r['cpu_busy']:.0%} | {r['cpu_top']} |"
        )
    if ob_rows:
        one_ob = ob_rows[0].get("rate", float("nan")) if ob_rows[0]["n"] == 1 else float("nan")
        lines += [
            "",
            "Onionbalance 0.2.4, the same service behind N backends (onion services of one tor of the bench, "
            "HiddenServiceOnionbalanceInstance), the same clients:",
            "",
            "| backends | req/s | x one backend | p50 ms | p99 ms | failed | backends used | first answer |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in ob_rows:
            if "unreachable" in r:
                lines.append(f"| {r['n']} | no answer within {r['unreachable']:g} s | | | | | | |")
                print(r["log"], flush=True)
                continue
            times = r["rate"] / one_ob if one_ob == one_ob else float("nan")
            lines.append(
                f"| {r['n']} | {r['rate']:.2f} | {times:.2f} | {r['p50'] * 1000:.0f} | {r['p99'] * 1000:.0f} "
                f"| {r['failed']} | {r['replicas_used']} | {r['reachable']:.0f} s |"
            )
    lines += [
        "",
        f"- load step (idle, then {per * middle} clients; --min 1 --max {middle} --high 1.5 --up-after 1): "
        f"all {middle} replicas up after {stepped['all_up']:.1f} s; 80% of the fixed-{middle} rate after "
        f"{stepped['absorbed']:.1f} s",
        f"- lost replica ({middle} under load, one's instance dies): detected after "
        f"{recovered['detected']:.1f} s, replaced after {recovered['replaced']:.1f} s, 80% rate after "
        f"{recovered['back']:.1f} s; {recovered['failed']} requests failed",
        f"- load average at the end (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores shared with other work",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", default="1,2,4,8", help="replica counts, comma-separated, 1 first")
    parser.add_argument("--service-ms", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--clients-per-replica", type=int, default=4,
        help="closed-loop clients per replica (3 offer exactly a replica's rate at 0.6 s a request)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--boxes", type=int, default=2, help="Bento boxes of the testnet it starts")
    parser.add_argument("--dir", help="use the testnet running in this directory")
    parser.add_argument(
        "--onionbalance", action="store_true", help="also onionbalance (pip install .[bench])"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.replicas.split(",")]
    with testnet(args.dir, args.boxes) as net:
        per = args.clients_per_replica
        body = asyncio.run(
            measure(net, sizes, args.service_ms, args.seconds, args.warmup, args.onionbalance, per)
        )
    flags = f"--replicas {args.replicas} --service-ms {args.service_ms} --seconds {args.seconds:g}"
    flags += f" --clients-per-replica {args.clients_per_replica}"
    flags += f" --boxes {args.boxes}" if not args.dir else f" --dir {args.dir}"
    flags += " --onionbalance" if args.onionbalance else ""
    record("LoadBalancer scaling", f"python bench/loadbalance.py {flags}", body)


if __name__ == "__main__":
    main()
