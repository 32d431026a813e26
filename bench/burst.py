"""Many sessions on one box: a cold burst's first replies, steady round trips, and memory.

The client runs inside a testnet (``bento testnet run``), through the client library and
Tor, against the first box, whose policy is sized for it. It deploys an echo function,
opens ``--sessions`` sessions at once (the circuit to the box is already up: the box is
what is measured, not the first circuit), and notes when each first hears from its
instance (the burst). Then every session sends ``--round-trips`` messages, one after
another, all sessions at once, and each echo's round trip is noted (steady state). With
every session idle in ``api.recv()``, the memory of each instance (USS: the pages only its
processes hold, from /proc/PID/smaps_rollup) and of the server is read. Every session then
ends, and once the box's pool has refilled (a pool that follows demand grows to the burst's
size; up to 120 s), a second burst is measured the same way.

    python bench/burst.py [--sessions 128] [--round-trips 10] [--before COMMIT] [--rounds 2] [--record]

runs the whole comparison: for each round, a testnet whose boxes run the code of
``--before`` (by default the commit before this work), then one whose boxes run this tree,
alternating, so that a host whose load changes (a background experiment) weighs on both.
With ``--in-process``, the box alone: its registry and real sandboxes in the bench's own
process (no Tor, no HTTP), its pool and watchdog at work as the daemon runs them; the
first output of each of the sessions invoked at once, before and after by turns.

One measurement alone, inside a testnet you start:

    bento testnet run --policy FILE -- python bench/burst.py --client OUT.json --sessions 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from record import HostCPU, record

ROOT = Path(__file__).resolve().parent.parent
ECHO = """
from bento.runtime import api

def echo():
    api.send("up")
    while (message := api.recv()) is not None:
        api.send(message)
"""
MEMORY_MB = 32  # per instance: the policy's total is sized as sessions x this


def uss_kib(pid: int) -> int:
    """Private memory of ``pid`` (clean and dirty pages no other process maps), in KiB."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    except OSError:
        return 0
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # it ended meanwhile
            found += [int(child) for child in task.read_text().split()]
    return found


def tree(pid: int) -> list[int]:
    todo, found = [pid], []
    while todo:
        found.append(todo.pop())
        todo += children(found[-1])
    return found


def memory(server: int) -> dict[str, Any]:
    """The server's USS, and each instance's: every process below one child of the server."""
    instances = [sum(uss_kib(p) for p in tree(child)) for child in children(server)]
    return {"server_kib": uss_kib(server), "instance_kib": sorted(k for k in instances if k)}


def sandboxes(server: int) -> list[int]:
    """The server's sandboxes (each a bubblewrap child of its own; the server's other child is tor)."""
    found = []
    for child in children(server):
        with contextlib.suppress(OSError):  # it ended meanwhile
            if Path(f"/proc/{child}/comm").read_text().strip() == "bwrap":
                found.append(child)
    return found


async def ended(stream: Any) -> None:
    """End a session: its input closed, the echo returns, and its instance is gone."""
    await stream.close_input()
    while await stream.receive() is not None:
        pass
    await stream.close()


async def measure(sessions: int, round_trips: int) -> dict[str, Any]:
    from bento.client.box import Box
    from bento.errors import BentoError
    from bento.protocol.manifest import Manifest
    from bento.protocol.policy import Needs
    from bento.testnet import Testnet

    net = Testnet.attach(Path(os.environ["BENTO_TESTNET_DIR"]))
    node = net.state.boxes[0]
    assert node.bento_onion is not None and node.bento_pid is not None
    errors: list[str] = []
    async with Box(node.bento_onion, socks=net.socks_address) as box:
        needs = Needs(memory_mb=MEMORY_MB, instances=sessions, wall_seconds=600)
        function = await box.deploy(ECHO.encode(), Manifest(name="echo", needs=needs))
        warm = await box.start(function, "echo")  # the circuit and the pool come up
        assert await warm.receive() == b"up"
        await ended(warm)

        began = time.perf_counter()

        async def open_one() -> tuple[float, Any]:
            stream = await box.start(function, "echo")
            first = await stream.receive()
            if first != b"up":
                raise RuntimeError(f"first reply {first!r}: {stream.ended}")
            return time.perf_counter() - began, stream

        cpu = HostCPU()
        cpu.start()
        opened = await asyncio.gather(*(open_one() for _ in range(sessions)), return_exceptions=True)
        cpu.stop()
        streams = [o[1] for o in opened if isinstance(o, tuple)]
        errors += [f"open: {o!r}" for o in opened if isinstance(o, BaseException)]
        firsts = [o[0] for o in opened if isinstance(o, tuple)]

        async def echo_many(stream: Any) -> list[float]:
            times = []
            for index in range(round_trips):
                message = f"{index:08d}".encode()
                sent = time.perf_counter()
                await stream.send(message)
                if await stream.receive() != message:
                    raise RuntimeError(f"no echo: {stream.ended}")
                times.append(time.perf_counter() - sent)
            return times

        echoed = await asyncio.gather(*(echo_many(s) for s in streams), return_exceptions=True)
        errors += [f"echo: {e!r}" for e in echoed if isinstance(e, BaseException)]
        trips = [t for e in echoed if isinstance(e, list) for t in e]
        held = memory(node.bento_pid)
        print(f"burst, echoes and memory read; {len(errors)} errors", file=sys.stderr)
        await asyncio.gather(*(ended(stream) for stream in streams), return_exceptions=True)
        # Again, once the pool has refilled: a box that follows demand holds a burst's worth, one
        # of fixed size its few (no more for 10 s). Another process's state: /proc is all to watch.
        deadline, counted, since = time.monotonic() + 120, -1, time.monotonic()
        while (warm_again := len(sandboxes(node.bento_pid))) < sessions and time.monotonic() < deadline:
            if warm_again != counted:
                counted, since = warm_again, time.monotonic()
            elif time.monotonic() - since > 10:
                break
            await asyncio.sleep(0.5)
        began = time.perf_counter()
        opened = await asyncio.gather(*(open_one() for _ in range(sessions)), return_exceptions=True)
        again = [o[0] for o in opened if isinstance(o, tuple)]
        errors += [f"open again: {o!r}" for o in opened if isinstance(o, BaseException)]
        await asyncio.gather(*(ended(o[1]) for o in opened if isinstance(o, tuple)), return_exceptions=True)
        try:
            await box.shutdown(function)
        except BentoError as exc:  # measured already: say so, and keep the figures
            errors.append(f"shutdown: {exc!r}")
    return {
        "first": firsts,
        "again": again,
        "warm_again": warm_again,
        "round_trips": trips,
        "errors": errors,
        "memory": held,
        "burst_cpu": {"busy": cpu.busy, "top": cpu.top()},
        "load": os.getloadavg()[0],
    }


async def box_alone(sessions: int) -> dict[str, Any]:
    """First outputs of ``sessions`` invoked at once on a registry in this process: a burst on
    a box up for a while, then another once the first has ended and its pool refilled (a pool
    that follows demand has grown to the first burst's size; one of fixed size has not)."""
    import base64

    from bento.protocol.manifest import Manifest
    from bento.protocol.messages import CodeKind
    from bento.protocol.policy import Needs
    from bento.sandbox.host import SandboxHost
    from bento.sandbox.spec import Spec
    from bento.server.broker import closed_gate
    from bento.server.config import ServerConfig
    from bento.server.registry import Registry
    from bento.testnet.box_policy import box_policy

    policy = box_policy(None, instances_total=sessions, instances_per_function=sessions)
    policy = policy.model_copy(update={"total_memory_mb": max(policy.total_memory_mb, sessions * MEMORY_MB)})
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        config = ServerConfig(state_dir=Path(tmp) / "state", policy=policy)
        sandbox = SandboxHost(config.policy, config.state_dir, accept_unenforced=["cpu_share"])
        registry = Registry(config, "bench", sandbox, closed_gate())
        registry.reset_storage()
        # The pool as the daemon runs it: one that follows demand, or (older trees) of fixed size.
        most = getattr(config, "pool_most", config.pool_size)
        extra = (most,) if most != config.pool_size else ()
        keeper = asyncio.ensure_future(sandbox.keep_pool(config.pool_size, *extra))
        watchdog = asyncio.ensure_future(sandbox.watch_forever())
        bursts: list[list[float]] = []
        errors: list[str] = []
        warm: list[int] = []
        try:
            async with registry.running():
                needs = Needs(memory_mb=MEMORY_MB, instances=sessions)
                deployed = await registry.deploy(
                    Manifest(name="echo", needs=needs),
                    CodeKind.MODULE,
                    base64.b64encode(ECHO.encode()).decode(),
                )
                ready = config.pool_size
                for _ in range(2):
                    async with asyncio.timeout(120):  # its pool as full as it will get
                        await sandbox.pool.stocked(Spec.of(needs).shape, ready)
                    warm.append(len(sandbox.pool))
                    began = time.perf_counter()
                    invoked = [registry.invoke(deployed.function, "echo", [], {}) for _ in range(sessions)]

                    async def first(session: Any, began: float = began) -> float | str:
                        if await session.output.read(0) != b"up":
                            return f"{session.state}: {session.reason}"  # it ended without a word
                        return time.perf_counter() - began

                    answers = await asyncio.gather(*(first(s) for s in invoked))
                    bursts.append([a for a in answers if isinstance(a, float)])
                    errors += [a for a in answers if isinstance(a, str)]
                    for session in invoked:
                        session.kill("the bench is done")
                    await asyncio.gather(*(s.done.wait() for s in invoked))
                    # As many as the pool means to hold now (older trees: pool_size).
                    target = getattr(sandbox.pool, "target", None)
                    ready = target(config.pool_size, most) if target else config.pool_size
        finally:
            keeper.cancel()
            watchdog.cancel()
            await asyncio.gather(keeper, watchdog, return_exceptions=True)
            sandbox.close()
    return {
        "first": bursts[0],
        "again": bursts[1],
        "warm": warm,
        "errors": errors,
        "load": os.getloadavg()[0],
    }


def export(commit: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def policy_file(sessions: int, into: Path) -> Path:
    """The testnet's own box policy, sized for ``sessions`` instances of MEMORY_MB."""
    from bento.testnet.box_policy import box_policy, server_config

    policy = box_policy(None, instances_total=sessions, instances_per_function=sessions)
    policy = policy.model_copy(update={"total_memory_mb": max(policy.total_memory_mb, sessions * MEMORY_MB)})
    table = tomllib.loads(server_config(policy, privileged=True))["policy"]
    path = into / "policy.toml"
    path.write_text(server_config(policy, privileged=True).split("[policy]\n", 1)[1])
    assert tomllib.loads(path.read_text()) == table
    return path


def one_run(src: Path, policy: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """A testnet whose boxes run the code under ``src`` (the testnet itself is this tree's)."""
    argv = [sys.executable, "-m", "bento", "testnet", "run", "--bento-boxes", "1", "--policy", str(policy)]
    argv += ["--", sys.executable, __file__, "--client", str(out), "--sessions", str(args.sessions)]
    argv += ["--round-trips", str(args.round_trips)]
    env = {**os.environ, "PYTHONPATH": f"{src}:{ROOT / 'bench'}"}
    for _ in range(3):  # a testnet that did not come up (a port taken meanwhile on a busy host) again
        subprocess.run(argv, env=env, check=False, timeout=1800)
        if out.exists():
            break
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def quantile(samples: list[float], q: float) -> float:
    ranked = sorted(samples)
    return ranked[min(len(ranked) - 1, int(q * len(ranked)))] if ranked else float("nan")


def describe(name: str, runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for index, run in enumerate(runs, 1):
        first, trips, mem = run["first"], run["round_trips"], run["memory"]
        instances = mem["instance_kib"]
        p50, p99 = quantile(trips, 0.5), quantile(trips, 0.99)
        uss = statistics.median(instances) / 1024 if instances else 0.0
        lines.append(
            f"- {name}, run {index} (load {run['load']:.1f}): first replies median "
            f"{quantile(first, 0.5):.2f} s, p99 {quantile(first, 0.99):.2f} s, "
            f"last {max(first, default=float('nan')):.2f} s; round trips p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms (p99/p50 {p99 / p50:.2f}, n={len(trips)}); "
            f"errors {len(run['errors'])}; "
            f"USS per idle instance median {uss:.1f} MiB ({len(instances)} instances, "
            f"{sum(instances) / 1024:.0f} MiB together), server {mem['server_kib'] / 1024:.0f} MiB; "
            f"host CPU during the burst {run['burst_cpu']['busy']:.0%} busy ({run['burst_cpu']['top']})"
        )
        again = run.get("again", [])
        lines.append(
            f"  - again, once the pool refilled ({run.get('warm_again', 0)} sandboxes waiting): "
            f"first replies median {quantile(again, 0.5):.2f} s, p99 {quantile(again, 0.99):.2f} s, "
            f"last {max(again, default=float('nan')):.2f} s"
        )
        lines += [f"  - error: {e[:240]}" for e in run["errors"][:3]]
    return lines


def compare_alone(args: argparse.Namespace) -> None:
    command = f"python bench/burst.py --in-process --sessions {args.sessions} --before {args.before}"
    command += f" --rounds {args.rounds}"
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bento-burst-") as tmp:
        trees = {"before": export(args.before, Path(tmp) / "before"), "after": ROOT / "src"}
        for round_ in range(args.rounds):
            for name, src in trees.items():
                out = Path(tmp) / f"{name}-{round_}.json"
                argv = [sys.executable, __file__, "--alone", str(out), "--sessions", str(args.sessions)]
                env = {**os.environ, "PYTHONPATH": f"{src}:{ROOT / 'bench'}"}
                subprocess.run(argv, env=env, check=True, timeout=900)
                runs[name].append(json.loads(out.read_text()))
    loads = [run["load"] for name in runs for run in runs[name]]
    lines = [
        f"{args.sessions} sessions invoked at once on the box alone: its registry and real sandboxes in",
        "the bench's process (no Tor, no HTTP), its pool and watchdog at work as the daemon runs them; the",
        "time to each session's first output. The first burst comes to a box up for a while (its pool at",
        "pool_size); the second once the first has ended and the pool refilled (one that follows demand",
        f"holds up to {args.sessions} then). Before = {args.before}, after = this tree, by turns; load",
        f"average at the runs' ends {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores",
        "(other work ran too).",
        "",
    ]
    for name, results in runs.items():
        for run in results:
            for burst, key in (("first burst", "first"), ("second burst", "again")):
                first = run.get(key, [])
                warm = run.get("warm", [0, 0])[key == "again"]
                lines.append(
                    f"- {name}, {burst} ({warm} waiting in the pool): median {quantile(first, 0.5):.2f} s, "
                    f"p99 {quantile(first, 0.99):.2f} s, last {max(first, default=float('nan')):.2f} s"
                )
            errors = run["errors"]
            lines[-1] += f"; {len(errors)} failed" + (f" (the first: {errors[0]})" if errors else "")
    lines.append("")
    for key, burst in (("first", "first burst"), ("again", "second burst")):
        medians = {n: statistics.median([quantile(r[key], 0.5) for r in rs]) for n, rs in runs.items()}
        lines.append(
            f"The {burst}, median of the runs' medians: before {medians['before']:.2f} s, after "
            f"{medians['after']:.2f} s (after/before {medians['after'] / medians['before']:.2f})."
        )
    record(f"Burst of {args.sessions} sessions, the box alone", command, "\n".join(lines))


def compare(args: argparse.Namespace) -> None:
    command = f"python bench/burst.py --sessions {args.sessions} --round-trips {args.round_trips}"
    command += f" --before {args.before} --rounds {args.rounds}"
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bento-burst-") as tmp:
        trees = {"before": export(args.before, Path(tmp) / "before"), "after": ROOT / "src"}
        policy = policy_file(args.sessions, Path(tmp))
        for round_ in range(args.rounds):
            for name, src in trees.items():
                out = Path(tmp) / f"{name}-{round_}.json"
                results[name].append(one_run(src, policy, args, out))
    medians = {n: statistics.median([quantile(r["first"], 0.5) for r in rs]) for n, rs in results.items()}
    agains = {n: statistics.median([quantile(r["again"], 0.5) for r in rs]) for n, rs in results.items()}
    lines = [
        f"{args.sessions} sessions opened at once on one box of the testnet (a box sized for them: "
        f"instances_total = instances_per_function = {args.sessions}, {MEMORY_MB} MB each), through the",
        "client library and Tor (`bento testnet run`); an echo function; the circuit to the box is up",
        f"before the burst. Then {args.round_trips} echoes one after another in every session, all at once.",
        f"Before = the boxes run {args.before}; after = this tree. Alternating, a fresh testnet each run,",
        "on a host that other work loads too (a background experiment of about two cores): the load",
        "average of each run is given.",
        "",
        *describe("before", results["before"]),
        *describe("after", results["after"]),
        "",
        f"Median of the runs' median first reply: before {medians['before']:.2f} s, after "
        f"{medians['after']:.2f} s (after/before {medians['after'] / medians['before']:.2f}); the second "
        f"burst: before {agains['before']:.2f} s, after {agains['after']:.2f} s.",
    ]
    record(f"Burst of {args.sessions} sessions", command, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=128)
    parser.add_argument("--round-trips", type=int, default=10, help="echoes per session, one after another")
    parser.add_argument("--before", default="a5a870b", help="the commit whose boxes are 'before'")
    parser.add_argument("--rounds", type=int, default=2, help="before/after pairs, alternating")
    parser.add_argument(
        "--client", type=Path, metavar="OUT", help="measure inside a testnet, into OUT (JSON)"
    )
    parser.add_argument("--in-process", action="store_true", help="the box alone, before and after")
    parser.add_argument("--alone", type=Path, metavar="OUT", help=argparse.SUPPRESS)  # a run of --in-process
    args = parser.parse_args()
    if args.client is not None:
        args.client.write_text(json.dumps(asyncio.run(measure(args.sessions, args.round_trips))))
    elif args.alone is not None:
        args.alone.write_text(json.dumps(asyncio.run(box_alone(args.sessions))))
    elif args.in_process:
        compare_alone(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
