"""A bench writes docs/benchmarks.md only with --record; a check run's figures go elsewhere.

Each run is a real Python process that imports bench/record.py the way every bench does,
then parses its own options with argparse (which would refuse an option it does not know).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

A_BENCH = """
import argparse, sys
sys.path.insert(0, sys.argv.pop(1))
from record import RECORDING, report_path, record
parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=1)
args = parser.parse_args()
print("report:", report_path())
if not RECORDING:
    record("A check", f"python bench/x.py --runs {args.runs}", "- figure: 42 ms")
"""


def _run(*options: str, report: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENTO_BENCH_REPORT": str(report)}
    return subprocess.run(
        [sys.executable, "-c", A_BENCH, str(BENCH), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_without_record_the_report_goes_elsewhere_and_docs_stay_unchanged(tmp_path: Path) -> None:
    docs = BENCH.parent / "docs" / "benchmarks.md"
    before = docs.read_bytes()
    report = tmp_path / "report.md"
    ran = _run("--runs", "3", report=report)
    assert f"report: {report}" in ran.stdout
    assert "--record" in ran.stdout, "the run says how to record"
    written = report.read_text()
    assert written.startswith("# Benchmarks")
    assert "## A check\n" in written and "- figure: 42 ms" in written
    assert "`python bench/x.py --runs 3`" in written
    assert docs.read_bytes() == before
    # A second run replaces its section, as in docs/benchmarks.md.
    _run(report=report)
    assert report.read_text().count("## A check\n") == 1


def test_record_anywhere_on_the_command_line_chooses_docs_and_the_bench_never_sees_it(
    tmp_path: Path,
) -> None:
    ran = _run("--runs", "2", "--record", report=tmp_path / "report.md")  # the bench records nothing here
    assert f"report: {BENCH.parent / 'docs' / 'benchmarks.md'}" in ran.stdout
    assert not (tmp_path / "report.md").exists()
