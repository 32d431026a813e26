"""Invoking a deployed function over Tor, before and after the one-round-trip invoke.

Starts one testnet with a Bento box and measures, on that one network, a client tree of
``--before`` (exported from git to a temporary directory) against this tree:

1. invoke -> first output byte with the client library: before, POST /sessions and then
   attach (a new Tor stream for the WebSocket); after, ``Box.start`` (the invocation rides
   the WebSocket upgrade, and output follows the answer). Warm: one Box for every run;
   new: a new Box (a new connection, the rendezvous circuit already up) per run, as each
   ``bento`` command has. The reference round trip is a GET of the descriptor on a
   connection already open (right after another on it): one request and its answer over
   the circuit, nothing to open (bench/invoke_probe.py).
2. a whole ``bento invoke hello main '"bench"'`` as a user times it: a new process,
   start to exit (the circuit to the box already up, as after a deploy).

3. with ``--cli-before COMMIT``: the whole ``bento invoke`` of COMMIT's tree and of this
   one, run by turns, the command's own start (``bento invoke --help``) of each, and the
   interpreter's (``python -c pass``): wall-clock and CPU time of each process, and the
   whole invoke split into the interpreter, the command's start, and the rest (the network
   and the box, measured by the library, and the handling of the answer and the exit).
   Every tree runs byte-compiled, as an installed ``bento`` does.

    python bench/invoke_latency.py [--runs 10] [--before 0a0397b] [--cli-before COMMIT]

Takes about 3 minutes on 2 cores (the testnet start included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bento.testnet import Testnet, TestnetConfig
from record import record, summary

ROOT = Path(__file__).resolve().parent.parent
HELLO = 'from bento.runtime import api\n\ndef main(name):\n    api.send(f"hello {name}\\n")\n    return 1\n'


OLD_FIELDS = (
    "function_id",
    "name",
    "onion",
    "relay_fingerprint",
    "relay_nickname",
    "invocation_token",
    "shutdown_token",
    "boot_id",
    "entry_points",
    "deployed_at",
)


def export(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return compiled(into / "src")


def compiled(src: Path) -> Path:
    """``src`` with its bytecode written, as an installed package has it: a tree without it
    (an export, or any tree where PYTHONDONTWRITEBYTECODE is set) compiles every module of
    the command again in each run, which no user's ``bento`` does."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True, capture_output=True)
    return src


def bento(src: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "bento", *args],
        env={**env, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"bento {' '.join(args)} failed:\n{done.stderr}")
    return done


def probe(src: Path, keyring: Path, socks: str, mode: str, runs: int, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "invoke_probe.py"),
            str(keyring),
            "hello",
            socks,
            mode,
            str(runs),
        ],
        env={**env, "PYTHONPATH": f"{src}{os.pathsep}{ROOT / 'bench'}"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {mode} probe failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def cli_runs(src: Path, env: dict[str, str], runs: int, check: bool) -> list[float]:
    """``check=False`` for an older CLI: it rejects the newer box's end event (more usage
    fields) after the output, so it exits 1, having done all its network work."""
    bento(src, env, "invoke", "hello", "main", '"bench"', check=check)  # warm-up: the circuit is up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = bento(src, env, "invoke", "hello", "main", '"bench"', check=check)
        times.append(time.perf_counter() - started)
        assert done.stdout == "hello bench\n" or not check, done.stdout  # an older CLI may fail after
    return times


def cli_by_turns(trees: dict[str, Path], env: dict[str, str], runs: int) -> dict[str, dict[str, list[float]]]:
    """The whole invoke and the command's start (``invoke --help``) of each tree, by turns,
    so that a host whose load changes weighs on each alike: the wall-clock time of each
    process, and the CPU time it used (user and system), which the host's load inflates
    far less than the time a user waits."""
    kinds = ("invoke", "help", "python", "invoke cpu", "help cpu", "python cpu")
    times: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in kinds} for name in trees}
    for src in trees.values():
        bento(src, env, "invoke", "hello", "main", '"bench"')  # warm-up: the circuit is up
    for _ in range(runs):
        for name, src in trees.items():
            for kind, args in (
                ("invoke", ("invoke", "hello", "main", '"bench"')),
                ("help", ("invoke", "--help")),
                ("python", ()),  # the interpreter alone: `python -c pass` in the same environment
            ):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                if args:
                    bento(src, env, *args)
                else:
                    subprocess.run(
                        [sys.executable, "-c", "pass"], env={**env, "PYTHONPATH": str(src)}, check=True
                    )
                times[name][kind].append(time.perf_counter() - started)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                times[name][f"{kind} cpu"].append(cpu)
    return times


def ms(samples: list[float]) -> list[float]:
    return [s * 1000 for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--before", default="0a0397b", help="the commit whose client is 'before'")
    parser.add_argument("--cli-before", default=None, metavar="COMMIT", help="also time this commit's CLI")
    args = parser.parse_args()
    command = f"python bench/invoke_latency.py --runs {args.runs} --before {args.before}"
    command += f" --cli-before {args.cli_before}" if args.cli_before else ""
    now = compiled(Path(__file__).resolve().parent.parent / "src")
    with tempfile.TemporaryDirectory() as tmp:
        before = export(args.before, Path(tmp))
        source = Path(tmp) / "hello.py"
        source.write_text(HELLO)
        config = TestnetConfig(directory=Path(tmp) / "net", bento_boxes=1, owner_pid=os.getpid())
        with Testnet.start(config) as net:
            results: dict[str, dict[str, Any]] = {}
            # Deployed once, by this tree (an older client may not parse a newer box's
            # descriptor); the older client gets the same function in its keyring format.
            after = Path(tmp) / "after.json"
            env = {**os.environ, **net.environment(), "BENTO_KEYRING": str(after)}
            bento(now, env, "deploy", str(source), "--box", "exit0", "--json")
            functions = json.loads(after.read_text())["functions"]
            old = {k: {f: v[f] for f in OLD_FIELDS} for k, v in functions.items()}
            (Path(tmp) / "before.json").write_text(json.dumps({"functions": old, "sessions": {}}))
            for name, src in (("before", before), ("after", now)):
                keyring = Path(tmp) / f"{name}.json"
                env = {**os.environ, **net.environment(), "BENTO_KEYRING": str(keyring)}
                mode = "post" if name == "before" else "ws"
                results[name] = probe(now, after, net.socks_address, mode, args.runs, env)
                results[name]["cli"] = cli_runs(src, env, args.runs, check=name == "after")
            turns: dict[str, dict[str, list[float]]] = {}
            if args.cli_before:
                (Path(tmp) / "cli-before").mkdir()
                env = {**os.environ, **net.environment(), "BENTO_KEYRING": str(after)}
                trees = {args.cli_before: export(args.cli_before, Path(tmp) / "cli-before"), "this tree": now}
                turns = cli_by_turns(trees, env, args.runs)
    rtt = statistics.median(results["before"]["descriptor"] + results["after"]["descriptor"])
    lines = [
        "One testnet, one Bento box (exit0); the rendezvous circuit is up in every run. Library:",
        "before = POST /sessions, then attach on a new connection (the wire pattern of the client",
        f"at {args.before}, whose WebSocket library opened a Tor stream of its own), after =",
        "`Box.start` (the invocation in the WebSocket upgrade); both with this tree's client, as",
        f"the client at {args.before} cannot parse this box's newer events. CLI: before = the",
        f"`bento` of {args.before} (it exits 1 after the output, on the newer end event; its",
        "network work is all done by then), after = this tree's.",
        "",
        f"One HTTP round trip over the circuit: median {rtt * 1000:.2f} ms, a GET of the descriptor on a",
        "connection already open (after another on it). The reference used to be a fetch right after a",
        "session, whose WebSocket had taken the connection: it opened a Tor stream too (two round trips),",
        "and the first byte read as half of one.",
        "",
        "Invoke -> first output byte, client library, warm connection:",
        "",
    ]
    for name in ("before", "after"):
        warm = results[name]["warm"]
        lines.append(f"- {name}: {summary(ms(warm), 'ms')}; {statistics.median(warm) / rtt:.1f} round trips")
    after = statistics.median(results["after"]["warm"]) / rtt
    lines += [
        "",
        f"After, the first output byte costs {after:.1f} round trips"
        + (" (about one)" if 0.75 <= after <= 1.5 else "")
        + ": the invocation travels with the",
        "opening of the session's stream (its WebSocket upgrade), and the output follows the box's answer.",
    ]
    lines += [
        "",
        "Invoke -> first output byte, a new connection per invocation (as each `bento` command):",
        "",
    ]
    for name in ("before", "after"):
        new = results[name]["new"]
        lines.append(f"- {name}: {summary(ms(new), 'ms')}; {statistics.median(new) / rtt:.1f} round trips")
    lines += ["", "A whole `bento invoke hello main '\"bench\"'`, start of the process to its exit:", ""]
    for name in ("before", "after"):
        lines.append(f"- {name}: {summary(results[name]['cli'], 's')}")
    if args.cli_before:
        lines += [
            "",
            "The whole `bento invoke`, and the command's own start (`bento invoke --help`), by turns:",
            "",
        ]
        for name, kinds in turns.items():
            lines.append(
                f"- {name}: invoke {summary(kinds['invoke'], 's')}; its start {summary(kinds['help'], 's')}"
            )
        lines += [
            "",
            "The CPU time (user + system) of those processes, which the host's load inflates less:",
            "",
        ]
        for name, kinds in turns.items():
            lines.append(
                f"- {name}: invoke {summary(ms(kinds['invoke cpu']), 'ms')}; "
                f"its start {summary(ms(kinds['help cpu']), 'ms')}"
            )
        first_byte = statistics.median(results["after"]["new"]) * 1000
        lines += ["", "Where a whole invoke's time goes (medians, wall-clock ms, then CPU ms):", ""]
        for name, kinds in turns.items():
            t = {kind: statistics.median(kinds[kind]) * 1000 for kind in kinds}
            lines.append(
                f"- {name}: the interpreter {t['python']:.0f} ({t['python cpu']:.0f}); the command's "
                f"start {t['help'] - t['python']:.0f} ({t['help cpu'] - t['python cpu']:.0f}); "
                f"the rest {t['invoke'] - t['help']:.0f} ({t['invoke cpu'] - t['help cpu']:.0f}), "
                f"of which the network and the box {first_byte:.0f} (the library's first byte on a new "
                "connection, above), and the answer's handling and the exit the remainder"
            )
    load = os.getloadavg()[1]
    lines += [
        "",
        f"Load average over the run's last 5 minutes: {load:.1f} on {os.cpu_count()} cores; the CLI",
        "figures (a new Python process each) are dominated by it; the round trips are not.",
    ]
    record("Invoke latency", command, "\n".join(lines))


if __name__ == "__main__":
    main()
