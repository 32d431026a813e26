"""Rounds of the fingerprinting dataset made up for tests: a manifest entry and visits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bento.eval import dataset
from bento.eval.dataset import Machine, RoundEntry, TestnetOptions, Visit
from bento.eval.traces import CELL_LEN, TLS13_OVERHEAD, Trace


def entry(number: int, conditions: Sequence[str], sites: int, **changes: object) -> RoundEntry:
    fields: dict[str, object] = {
        "number": number,
        "file": f"rounds/round-{number:04d}.npz",
        "sha256": "0" * 64,
        "started": "2026-12-07T10:00:00+00:00",
        "seconds": 60.0,
        "commit": "abc",
        "machine": Machine(host="h", cpus=2, memory_gib=24.0, kernel="6", tor="Tor 0.4.9.11"),
        "testnet": TestnetOptions(
            relays=5, exits=3, bento_boxes=1, hop_delay_ms=25, web_delay_ms=40, corpus_seed=0
        ),
        "parallel": 2,
        "conditions": list(conditions),
        "sites": sites,
        "visits": 0,
        "load_average": (1.0, 1.5),
    }
    return RoundEntry.model_validate({**fields, **changes})


def write_traces(data: Path, traces: Sequence[Trace]) -> None:
    """Write ``traces`` as rounds, one per visit number (each cell a record of its own)."""
    for number in range(1 + max(t.visit for t in traces)):
        write_round(data, number, [t for t in traces if t.visit == number])


def write_round(data: Path, number: int, traces: Sequence[Trace]) -> None:
    """Write ``traces`` as round ``number``, of the conditions they are under (each cell a
    record of its own)."""
    conditions = sorted({t.condition for t in traces})
    visits = [
        Visit(
            t.condition,
            t.site,
            0,
            dataset.batches(
                (float(time), int(d), CELL_LEN + TLS13_OVERHEAD)
                for time, d in zip(t.times, t.directions, strict=True)
            ),
        )
        for t in traces
    ]
    dataset.write_round(data, entry(number, conditions, 1 + max(t.site for t in traces)), visits)
