"""Recording benchmark figures in docs/benchmarks.md, with the date and the machine."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Figures recorded by the scripts under `bench/`; each section is replaced by its latest run.\n"
)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    tor = subprocess.run(["tor", "--version"], capture_output=True, text=True).stdout.splitlines()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, "
        f"Python {platform.python_version()}, {tor[0] if tor else 'tor ?'}"
    )


def summary(samples: list[float], unit: str) -> str:
    return (
        f"median {statistics.median(samples):.2f} {unit}, min {min(samples):.2f}, "
        f"max {max(samples):.2f} (n={len(samples)})"
    )


def record(name: str, command: str, body: str) -> None:
    """Replace (or add) the section ``name`` of docs/benchmarks.md and print it."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {name}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command}`\n\n{body.strip()}\n"
    )
    print(section)
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS.parent.mkdir(exist_ok=True)
    BENCHMARKS.write_text(text)
