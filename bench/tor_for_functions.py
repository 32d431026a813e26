"""Tor for functions on the testnet: what a function's circuits and onion services cost.

- circuit build time: a function's 3-hop circuit (built by the box's client-only tor for
  it) against the client's own 3-hop circuit (its tor, through its control port);
- onion service publish-to-reachable: from the function's ``api.tor.publish`` (not
  waiting for the descriptor) to the first connection that reaches it through the client;
- composition (with ``--compose``): a function on box A deploys, calls and shuts down a
  function on box B, against the client doing the same with B directly.

    python bench/tor_for_functions.py [--runs 10] [--dir EXISTING_TESTNET] [--compose]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from python_socks import ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from bento.client.box import Box
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs, SyscallProfile
from bento.testnet import Testnet, TestnetConfig
from bento.tor import control
from record import record, summary

FUNCTION = """
import time
from bento.runtime import api

def circuits(runs):
    seen = []
    for _ in range(runs):
        started = time.monotonic()
        circuit = api.tor.circuit(length=3).wait(timeout=60)
        seen.append([round(time.monotonic() - started, 4), circuit.built_seconds])
        circuit.close()
    return seen

def onion():
    listener = api.listen()
    started = time.monotonic()
    service = api.tor.publish(listener, wait=False)
    api.send(service.address + "\\n")
    listener.settimeout(120)
    peer, _ = listener.accept()
    reachable = time.monotonic() - started
    peer.close()
    return reachable
"""

CALLER = """
import time
from bento.client import sync
from bento.protocol.manifest import Manifest

def compose(onion, source, runs):
    seen = []
    with sync.connect(next(b for b in sync.boxes() if b.onion == onion)) as box:
        for _ in range(runs):
            started = time.monotonic()
            deployment = box.deploy(source.encode(), Manifest(name="callee"))
            output, ended = box.call(deployment, "main", ["A"])
            box.shutdown(deployment)
            assert output == b"hello A\\n", output
            seen.append(time.monotonic() - started)
    return seen
"""

CALLEE = """
from bento.runtime import api

def main(name):
    api.send(f"hello {name}\\n")
    return name
"""

TOR_NEEDS = Needs(
    tor_circuits=2,
    onion_services=1,
    listen=True,
    wall_seconds=600,
    syscall_profiles=[SyscallProfile.COMPUTE, SyscallProfile.NETWORK],
)


@contextlib.contextmanager
def testnet(directory: str | None) -> Iterator[Testnet]:
    if directory:
        yield Testnet.attach(Path(directory))
        return
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        config = TestnetConfig(directory=Path(tmp) / "net", bento_boxes=2, owner_pid=os.getpid())
        with Testnet.start(config) as net:
            yield net


async def run_function(box: Box, source: str, needs: Needs, entry: str, *args: object) -> object:
    deployment = await box.deploy(source.encode(), Manifest(name="bench", needs=needs))
    try:
        async with await box.start(deployment, entry, list(args)) as stream:
            async for _ in stream:
                pass
        assert stream.ended is not None and stream.ended.error is None, stream.ended
        return stream.ended.result
    finally:
        await box.shutdown(deployment)


def client_circuits(net: Testnet, runs: int) -> list[float]:
    seen = []
    with control.connect(net.control_address) as ctl:
        for _ in range(runs):
            started = time.monotonic()
            circuit = ctl.new_circuit(await_build=True, timeout=60)
            seen.append(time.monotonic() - started)
            ctl.close_circuit(circuit)
    return seen


async def onion_reachable(net: Testnet, box: Box) -> float:
    deployment = await box.deploy(FUNCTION.encode(), Manifest(name="bench", needs=TOR_NEEDS))
    host, port = control.parse_address(net.socks_address)
    try:
        async with await box.start(deployment, "onion") as stream:
            address = (await stream.receive() or b"").decode().strip()

            def knock() -> None:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        proxy = Proxy.from_url(f"socks5://{host}:{port}", rdns=True)
                        proxy.connect(f"{address}.onion", 80, timeout=30).close()
                        return
                    except (ProxyError, ProxyTimeoutError, OSError):
                        time.sleep(0.05)  # not yet published: knock again (bounded by the deadline)

            await asyncio.to_thread(knock)
            async for _ in stream:
                pass
        assert stream.ended is not None and stream.ended.error is None, stream.ended
        return float(stream.ended.result)
    finally:
        await box.shutdown(deployment)


async def compose(net: Testnet, a: Box, b: Box, runs: int) -> tuple[list[float], list[float]]:
    needs = Needs(call_boxes=True, memory_mb=256, wall_seconds=600)
    via_a = await run_function(a, CALLER, needs, "compose", b.onion, CALLEE, runs)
    assert isinstance(via_a, list)
    direct = []
    for _ in range(runs):
        started = time.monotonic()
        deployment = await b.deploy(CALLEE.encode(), Manifest(name="callee"))
        async with await b.start(deployment, "main", ["A"]) as stream:
            async for _ in stream:
                pass
        await b.shutdown(deployment)
        direct.append(time.monotonic() - started)
    return [float(x) for x in via_a], direct


async def measure(net: Testnet, runs: int, with_compose: bool) -> str:
    nodes = net.state.boxes
    async with Box(nodes[0].bento_onion or "", socks=net.socks_address) as a:
        result = await run_function(a, FUNCTION, TOR_NEEDS, "circuits", runs)
        assert isinstance(result, list)
        function_seen = [float(r[0]) for r in result]
        tor_seen = [float(r[1]) for r in result]
        own = client_circuits(net, runs)
        onions = [await onion_reachable(net, a) for _ in range(max(3, runs // 2))]
        lines = [
            "On the loopback testnet every hop is on this machine: the figures are what Bento and tor",
            "add (processing, scheduling under load), not network latency.\n",
            "3-hop circuits, request to built:\n",
            f"- a function's circuit, as the function sees it: {summary(function_seen, 's')}",
            f"- the same circuits, launch to BUILT in the box's function tor: {summary(tor_seen, 's')}",
            f"- the client's own circuit (its tor, new_circuit): {summary(own, 's')}",
            "",
            f"Onion service, publish to first connection through the client: {summary(onions, 's')}",
        ]
        if with_compose and len(nodes) > 1:
            async with Box(nodes[1].bento_onion or "", socks=net.socks_address) as b:
                via_a, direct = await compose(net, a, b, runs)
            ratio = statistics.median(via_a) / statistics.median(direct)
            lines += [
                "",
                "Composition, deploy + call + shut down a function on box B:",
                f"- from a function on box A (client only talks to A): {summary(via_a, 's')}",
                f"- the client with B directly: {summary(direct, 's')}",
                f"- A calling B costs {ratio:.2f}x the direct call",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--dir", help="use the testnet running in this directory")
    parser.add_argument("--compose", action="store_true", help="also measure composition (2 boxes)")
    args = parser.parse_args()
    with testnet(args.dir) as net:
        body = asyncio.run(measure(net, args.runs, args.compose))
    flags = f"--runs {args.runs}" + (" --compose" if args.compose else "")
    record("Tor for functions", f"python bench/tor_for_functions.py {flags}", body)


if __name__ == "__main__":
    main()
