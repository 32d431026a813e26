"""How long until a fresh testnet can build circuits (target: <= 30 s on 2 cores).

Measures `Testnet.start` end to end: key generation, starting every tor, the first
consensus listing every relay, and the client building a circuit.

    python bench/testnet_bootstrap.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bento.testnet import Testnet, TestnetConfig
from record import record, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    samples = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
            started = time.monotonic()
            net = Testnet.start(TestnetConfig(directory=Path(tmp) / "net", owner_pid=os.getpid()))
            samples.append(time.monotonic() - started)
            net.stop()
        print(f"run {run + 1}: {samples[-1]:.1f} s")
    verdict = "meets" if max(samples) <= 30 else "MISSES"
    record(
        "Testnet bootstrap",
        f"python bench/testnet_bootstrap.py --runs {args.runs}",
        f"3 authorities, 5 relays (3 exits), 1 client; start to first built circuit:\n\n"
        f"- {summary(samples, 's')}\n- target <= 30 s: {verdict} it on every run\n",
    )


if __name__ == "__main__":
    main()
