"""Does `bento testnet up --bento-boxes 2` start the first time, and how long does it take?

Runs the command ``--runs`` times in a row, as a user would (the CLI, in a process of its
own), each brought down after with `bento testnet down`; as root, or with ``--user NAME``
as that plain user (``setpriv``, as an operator runs the whole testnet unprivileged).
Each up and its down hold the suite's e2e lock (``--lock``), and the next run waits a
moment after releasing it, so that others' end-to-end tests run in between.

    python bench/testnet_up.py [--runs 20] [--user bento-e2e] [--record]

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
from pathlib import Path

from bento.testnet import boxes
from record import record

LOCK = "/tmp/bento-e2e.lock"  # the suite's: one testnet at a time on a shared machine
YIELD_SECONDS = 5.0  # after each run, so that a waiting e2e test gets the lock first


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--user", help="run the testnet as this plain user (from root)")
    parser.add_argument("--lock", default=LOCK, help=f"the lock each run holds (default {LOCK})")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds an up may take")
    args = parser.parse_args()
    prefix, env, home = _as_user(args.user)
    times: list[float] = []
    failures: list[str] = []
    restarts = 0
    try:
        for run in range(1, args.runs + 1):
            net = home / f"net-{run}"
            with open(args.lock, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                started = time.monotonic()
                try:
                    up = _bento(
                        prefix, env, home, ["up", "--bento-boxes", "2", "--dir", str(net)], args.timeout
                    )
                    took = time.monotonic() - started
                    if up.returncode != 0:
                        _keep_logs(net, Path(tempfile.gettempdir()) / f"bento-bench-up-failed-{run}")
                finally:
                    _bento(prefix, env, home, ["down", "--dir", str(net)], 120.0)
            said = up.stdout + up.stderr
            restarts += said.count("restarting the Bento server")
            if up.returncode == 0:
                times.append(took)
                print(f"run {run}: up in {took:.1f} s", flush=True)
            else:
                failures.append(f"run {run} ({took:.0f} s): {_last_lines(up.stderr)}")
                print(f"run {run}: FAILED after {took:.1f} s:\n{up.stderr}", flush=True)
            time.sleep(YIELD_SECONDS)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    who = f"as the plain user {args.user} (setpriv)" if args.user else "as root"
    figures = (
        f"median {statistics.median(times):.1f} s, max {max(times):.1f} s" if times else "no run succeeded"
    )
    body = (
        f"`bento testnet up --bento-boxes 2` (3 authorities, 5 relays, 2 boxes), {args.runs} runs in a row "
        f"{who}, each brought down after; time from start to `testnet up`:\n\n"
        f"- succeeded: {len(times)} of {args.runs}; {figures}\n"
        f"- box servers restarted after a slow publish: {restarts}\n"
        f"- failures: {len(failures)}\n" + "".join(f"  - {failure}\n" for failure in failures)
    )
    command = (
        "python bench/testnet_up.py --runs " + str(args.runs) + (f" --user {args.user}" if args.user else "")
    )
    record(f"Testnet up with two boxes, {'a plain user' if args.user else 'root'}", command, body)


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
