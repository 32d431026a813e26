"""Start-up time of the ``bento`` command, as a user times it: process start to exit.

Runs ``bento --version``, ``bento --help`` and ``bento invoke --help`` (a client command's
parser: it loads the client library but no server, testnet or uvicorn) with the current
tree, and with the tree of an older revision for comparison (``--before REV``: its
``src/`` is extracted from git into a temporary directory). Target (issue 8): ``--version``
and ``--help`` under 100 ms.

    python bench/cli_startup.py [--runs 20] [--before REV]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record, summary

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (["--version"], ["--help"], ["invoke", "--help"])


def measure(src: Path, argv: list[str], runs: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-c", "import sys; from bento.cli import main; sys.exit(main())", *argv]
    samples = []
    for _ in range(runs + 2):  # the first runs warm the page cache and the bytecode cache
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - started) * 1000)
    return samples[2:]


def revision() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--before", help="a git revision to compare with")
    args = parser.parse_args()
    trees = {f"this tree ({revision()})": ROOT / "src"}
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        if args.before:
            archive = subprocess.run(
                ["git", "archive", args.before, "src"], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees = {f"before ({args.before})": Path(tmp) / "src", **trees}
        lines = []
        for label, src in trees.items():
            lines.append(f"- {label}:")
            for argv in COMMANDS:
                samples = measure(src, argv, args.runs)
                lines.append(f"  - `bento {' '.join(argv)}`: {summary(samples, 'ms')}")
    body = (
        "Process start to exit of the `bento` command (a fresh Python each run, bytecode cached),\n"
        "output to /dev/null:\n\n" + "\n".join(lines) + "\n\n- target: `--version` and `--help` under 100 ms"
    )
    record("CLI start-up", f"python bench/cli_startup.py --runs {args.runs}"
           + (f" --before {args.before}" if args.before else ""), body)  # fmt: skip


if __name__ == "__main__":
    main()
