"""Recording benchmark figures in docs/benchmarks.md, with the date and the machine.

A run writes its report into docs/benchmarks.md only when asked to, with ``--record``
anywhere on the bench's command line: a check or a try then keeps its figures out of the
repository. Without it the report goes to ``$BENTO_BENCH_REPORT`` (default
``$TMPDIR/bento-bench/benchmarks.md``), in the same form, and is printed as always. This
module takes ``--record`` off the command line when a bench imports it, before the bench
parses its own options, so that every bench has it without a line of its own.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
RECORDING = "--record" in sys.argv[1:]
if RECORDING:
    sys.argv.remove("--record")


def report_path() -> Path:
    """Where this run's report goes: docs/benchmarks.md with ``--record``, else elsewhere."""
    if RECORDING:
        return BENCHMARKS
    default = Path(tempfile.gettempdir()) / "bento-bench" / "benchmarks.md"
    return Path(os.environ.get("BENTO_BENCH_REPORT") or default)


HEADER = (
    "# Benchmarks\n\n"
    "Figures recorded by the scripts under `bench/`; each section is replaced by its latest run with\n"
    "`--record` (without it a bench writes its report to `$BENTO_BENCH_REPORT`, by default\n"
    "`$TMPDIR/bento-bench/benchmarks.md`, and leaves this page alone).\n"
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


class HostCPU:
    """How busy the host's CPUs were between ``start()`` and ``stop()``, and who kept them busy.

    From /proc/stat (all CPUs) and every process's /proc/PID/stat (user and system time,
    grouped by command name), so a figure that stops growing can say whether the machine ran
    out of CPU, and on what.
    """

    def __init__(self) -> None:
        self._host: tuple[int, int] = (0, 0)
        self._procs: dict[int, tuple[str, int]] = {}
        self.busy = 0.0  # share of all CPUs' time, 0..1
        self.by_command: dict[str, float] = {}  # CPU seconds per command name
        self.busiest: tuple[str, float] = ("", 0.0)  # the one process that used most: who, seconds
        self.seconds = 0.0

    @staticmethod
    def _host_ticks() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    @staticmethod
    def _process_ticks() -> dict[int, tuple[str, int]]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            name = text[text.index("(") + 1 : text.rindex(")")]
            rest = text[text.rindex(")") + 2 :].split()
            found[int(entry.name)] = (name, int(rest[11]) + int(rest[12]))  # utime + stime
        return found

    @staticmethod
    def _label(pid: int, name: str) -> str:
        """A process as a reader knows it: a tor by its data directory, Python by its module."""
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return name
        if "-f" in args[:-1]:  # tor -f DATA_DIR/torrc
            return f"{name} {Path(args[args.index('-f') + 1]).parent.name}"
        if "-m" in args[:-1]:
            return f"{name} -m {args[args.index('-m') + 1]}"
        return name

    def start(self) -> None:
        self._host, self._procs = self._host_ticks(), self._process_ticks()
        self._started = time.monotonic()

    def stop(self) -> None:
        busy, total = self._host_ticks()
        self.seconds = time.monotonic() - self._started
        self.busy = (busy - self._host[0]) / max(1, total - self._host[1])
        tick = os.sysconf("SC_CLK_TCK")
        self.by_command = {}
        self.busiest = ("", 0.0)
        for pid, (name, ticks) in self._process_ticks().items():
            before = self._procs.get(pid, (name, 0))[1]  # a process started meanwhile: all of it
            used = (ticks - before) / tick
            self.by_command[name] = self.by_command.get(name, 0.0) + used
            if used > self.busiest[1]:
                self.busiest = (self._label(pid, name), used)

    def top(self, count: int = 3) -> str:
        ranked = sorted(self.by_command.items(), key=lambda item: -item[1])[:count]
        who, used = self.busiest
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in ranked) + (
            f"; the busiest process: {who}, {used / max(self.seconds, 1e-9):.0%} of a core" if who else ""
        )


def record(name: str, command: str, body: str) -> None:
    """Replace (or add) the section ``name`` of the report (see :func:`report_path`) and print it."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {name}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command}`\n\n{body.strip()}\n"
    )
    print(section)
    report = report_path()
    text = report.read_text() if report.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    if not RECORDING:
        print(f"written to {report}; docs/benchmarks.md is unchanged (run with --record to write it there)")
