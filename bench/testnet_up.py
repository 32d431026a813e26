"""Does `bento testnet up --bento-boxes 2` start the first time, and how long does it take?

Runs the command ``--runs`` times in a row, as a user would (the CLI, in a process of its
own), each brought down after with `bento testnet down`: as root and, with ``--user
NAME``, as that plain user in turns (``setpriv``, as an operator runs the whole testnet
unprivileged).
Each up and its down hold the suite's e2e lock (``--lock``), and the next run waits a
moment after releasing it, so that others' end-to-end tests run in between.

    python bench/testnet_up.py [--runs 20] [--user bento-e2e] [--minutes M] [--record]

With ``--minutes`` it starts no run after that long and records the runs it made (on a
machine shared with others' tests, the lock decides how many fit).

Reports the median and maximum time of `up` (start to "testnet up"), the failures with the
message of each, and how many box servers had to be restarted (a slow first publish).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bento.testnet import boxes
from record import record

LOCK = "/tmp/bento-e2e.lock"  # the suite's: one testnet at a time on a shared machine
YIELD_SECONDS = 5.0  # after each run, so that a waiting e2e test gets the lock first


@dataclass
class Runs:
    """One user's runs: how long each successful up took, and each failure's message."""

    user: str | None
    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    restarts: int = 0

    def line(self) -> str:
        who = f"as the plain user {self.user} (setpriv)" if self.user else "as root"
        done = len(self.times) + len(self.failures)
        figures = (
            f"median {statistics.median(self.times):.1f} s, max {max(self.times):.1f} s"
            if self.times
            else "no run succeeded"
        )
        return (
            f"- {who}: {len(self.times)} of {done} succeeded; {figures}; failures: {len(self.failures)}; "
            f"box servers restarted after a slow publish: {self.restarts}\n"
            + "".join(f"  - {failure}\n" for failure in self.failures)
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="runs for each user")
    parser.add_argument(
        "--user", action="append", default=[], help="also run as this plain user (from root), in turns"
    )
    parser.add_argument("--no-root", action="store_true", help="run only as the --user(s)")
    parser.add_argument("--lock", default=LOCK, help=f"the lock each run holds (default {LOCK})")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds an up may take")
    parser.add_argument("--minutes", type=float, help="start no run after this long; record what was done")
    args = parser.parse_args()
    users: list[str | None] = ([] if args.no_root else [None]) + args.user
    stop_at = time.monotonic() + 60 * args.minutes if args.minutes else float("inf")
    results = [Runs(user) for user in users]
    for run in range(1, args.runs + 1):
        for runs in results:
            if time.monotonic() > stop_at:
                break
            _one(runs, run, args.lock, args.timeout)
            time.sleep(YIELD_SECONDS)
    done = min(len(r.times) + len(r.failures) for r in results)
    stopped = f" (of {args.runs} asked: --minutes {args.minutes:g} ran out)" if done < args.runs else ""
    held = (
        "each up and down under the suite's e2e lock"
        if args.lock == LOCK
        else f"under a lock of their own ({args.lock}), so other testnets ran beside them"
    )
    body = (
        "`bento testnet up --bento-boxes 2` (3 authorities, 5 relays, 2 boxes; the default `--timeout` "
        f"of 120 s), run after run{stopped}, each brought down after with `bento testnet down`, "
        f"{held}; load average {_load()} at the end; time from start to `testnet up`:\n\n"
        + "".join(runs.line() for runs in results)
    )
    command = (
        "python bench/testnet_up.py --runs " + str(args.runs) + "".join(f" --user {u}" for u in args.user)
    )
    if args.lock != LOCK:
        command += f" --lock {args.lock}"
    record(
        "Testnet up with two boxes", command + (f" --minutes {args.minutes:g}" if args.minutes else ""), body
    )


def _load() -> str:
    """The 1-, 5- and 15-minute load averages: what else the machine was doing."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _one(runs: Runs, run: int, lock_path: str, timeout: float) -> None:
    """One up and its down, under the lock; what happened goes into ``runs``."""
    prefix, env, home = _as_user(runs.user)
    net = home / "net"
    try:
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            started = time.monotonic()
            try:
                up = _bento(prefix, env, home, ["up", "--bento-boxes", "2", "--dir", str(net)], timeout)
                took = time.monotonic() - started
                if up.returncode != 0:
                    _keep_logs(net, Path(tempfile.gettempdir()) / f"bento-bench-up-failed-{runs.user}-{run}")
            finally:
                _bento(prefix, env, home, ["down", "--dir", str(net)], 120.0)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    runs.restarts += (up.stdout + up.stderr).count("restarting the Bento server")
    who = runs.user or "root"
    if up.returncode == 0:
        runs.times.append(took)
        print(f"{who} run {run}: up in {took:.1f} s", flush=True)
    else:
        runs.failures.append(f"run {run} ({took:.0f} s): {_last_lines(up.stderr)}")
        print(f"{who} run {run}: FAILED after {took:.1f} s:\n{up.stderr}", flush=True)


def _as_user(user: str | None) -> tuple[list[str], dict[str, str], Path]:
    """The command line's start, the environment and a home for the runs."""
    home = Path(tempfile.mkdtemp(prefix="bento-bench-up-"))
    env = {
        k: v for k, v in os.environ.items() if k not in ("BENTO_SOCKS", "BENTO_CONTROL", "BENTO_TESTNET_DIR")
    }
    if user is None:
        return [sys.executable], env, home
    account = pwd.getpwnam(user)
    python = boxes.interpreter_for(account.pw_uid)
    if python is None:
        sys.exit(f"{user} cannot import Bento from this checkout")
    os.chown(home, account.pw_uid, account.pw_gid)
    drop = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
    env |= {"HOME": str(home), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())}
    return [*drop, python], env, home


def _bento(
    prefix: list[str], env: dict[str, str], home: Path, args: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    command = [*prefix, "-m", "bento", "testnet", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=home, env=env)
    except subprocess.TimeoutExpired as exc:
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(command, 124, "", f"{said}\ntimed out after {timeout:g} s")


def _keep_logs(net: Path, keep: Path) -> None:
    """A failed run's logs (every node's notice.log, each box's server.log), for a look after."""
    for log in [*net.glob("*/notice.log"), *net.glob("*-bento/server.log")]:
        (keep / log.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(log, keep / log.parent.name / log.name)
    print(f"its logs: {keep}", flush=True)


def _last_lines(text: str, count: int = 6) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-count:])


if __name__ == "__main__":
    main()
