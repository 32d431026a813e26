"""What a narrowed invocation token costs: its size, and the box's check of it per invocation.

In process, no box and no Tor: a function's root token is minted as a deploy mints it
(``Narrowing.mint``), narrowed with one to four caveats (entry points, uses, expiry, one
argument) and once more on top; each is then checked as the box checks an invocation
(``Narrowing.admit``: signatures, every block's caveats, the uses held and given back).
The check runs on the box's event loop, synchronously, so its time is the time every other
request waits behind it.

    python bench/narrowed_tokens.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from bento.client.narrowing import narrow
from bento.server.attenuation import Narrowing
from record import record, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="checks timed per token (default 2000)")
    runs = parser.parse_args().runs
    narrowing, root = Narrowing.mint("f" * 32)
    until = datetime.now(UTC) + timedelta(days=1)
    tokens = {
        "root (the box matches the owner's by digest instead)": root,
        "entry": narrow(root, entries=["get"]),
        "entry, uses, until, one argument": narrow(
            root, entries=["get"], uses=10**9, until=until, args=["d"]
        ),
    }
    tokens["the same, narrowed again (uses)"] = narrow(tokens["entry, uses, until, one argument"], uses=10**9)
    lines = ["| Token | Characters | Box's check per invocation |", "|---|---|---|"]
    for name, token in tokens.items():
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            narrowing.admit(token, "get", ["d"], {}).release()
            samples.append((time.perf_counter() - started) * 1e6)
        lines.append(f"| {name} | {len(token)} | {summary(samples, 'µs')} |")
    started = time.perf_counter()
    for _ in range(200):
        Narrowing.mint("f" * 32)
    minted = (time.perf_counter() - started) / 200 * 1e6
    body = (
        "\n".join(lines) + f"\n\nMinting a function's key pair and root token at deploy: {minted:.0f} µs.\n"
    )
    record("Narrowed tokens", f"python bench/narrowed_tokens.py --runs {runs}", body)


if __name__ == "__main__":
    main()
