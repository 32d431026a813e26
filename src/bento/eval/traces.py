"""What a website-fingerprinting attacker on the client's link sees, and where it is kept.

A *trace* is one visit to one site under one condition, as the sequence of Tor cells that
crossed the link between the client's tor and its guard: for each cell, the time since the
visit began (seconds) and its direction (+1 from the client, -1 towards it), the
convention of the fingerprinting literature.

Cells are counted from TLS record lengths (see :mod:`bento.eval.capture`): every Tor cell
is 514 bytes on a link of protocol 4 or later, and tor writes whole cells into TLS records,
so a record's length gives its number of cells whatever the MTU or TCP segmentation did to
the packets that carried it. On loopback (MTU 65536) counting packets would say nothing.

Files, in a dataset directory:

    traces/<condition>.jsonl.gz   one JSON object per line:
        {"site": 3, "visit": 7, "condition": "browser-1mb", "label": "site-003",
         "cells": [[0.0, 1], [0.0132, -1], ...]}
    df/<condition>.npz            Deep Fingerprinting's own input format: X (int8, visits x 5000,
                                  +1/-1 per cell, 0-padded), y (site), visit

    >>> trace = Trace(site=0, visit=0, condition="tor", times=[0.0, 0.1, 0.2], directions=[1, -1, -1])
    >>> trace.df_input(length=5).tolist()
    [1, -1, -1, 0, 0]
    >>> [round(x, 1) for x in trace.timing_input(length=4).tolist()]
    [0.0, -0.1, -0.2, 0.0]
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

CELL_LEN = 514  # bytes of a cell on the wire, link protocol >= 4 (4-byte circuit ids)
TLS13_OVERHEAD = 17  # a TLS 1.3 record's length counts the content type and the 16-byte tag
DF_LENGTH = 5000  # the input length of the published Deep Fingerprinting model


def cells_in_record(length: int) -> int:
    """How many cells a TLS application-data record of ``length`` bytes carries (at least 1)."""
    return max(1, round((length - TLS13_OVERHEAD) / CELL_LEN))


@dataclass
class Trace:
    site: int
    visit: int
    condition: str
    times: Sequence[float] = field(repr=False)
    directions: Sequence[int] = field(repr=False)
    label: str = ""

    @classmethod
    def from_records(
        cls, site: int, visit: int, condition: str, records: Iterable[tuple[float, int, int]], label: str = ""
    ) -> Trace:
        """From TLS records ``(time, direction, length)``: each becomes its cells."""
        times: list[float] = []
        directions: list[int] = []
        start: float | None = None
        for time, direction, length in records:
            start = time if start is None else start
            n = cells_in_record(length)
            times += [time - start] * n
            directions += [direction] * n
        return cls(site, visit, condition, times, directions, label)

    def __len__(self) -> int:
        return len(self.directions)

    def df_input(self, length: int = DF_LENGTH) -> npt.NDArray[np.int8]:
        """Directions, cut or zero-padded to ``length``: Deep Fingerprinting's input."""
        out = np.zeros(length, dtype=np.int8)
        d = np.asarray(self.directions[:length], dtype=np.int8)
        out[: len(d)] = d
        return out

    def timing_input(self, length: int = DF_LENGTH) -> npt.NDArray[np.float32]:
        """Direction times time, cut or zero-padded: Tik-Tok's directional timing."""
        out = np.zeros(length, dtype=np.float32)
        n = min(length, len(self.directions))
        out[:n] = np.asarray(self.directions[:n], dtype=np.float32) * np.asarray(self.times[:n], np.float32)
        return out

    def to_json(self) -> str:
        cells = [[round(float(t), 6), int(d)] for t, d in zip(self.times, self.directions, strict=True)]
        record = {
            "site": self.site,
            "visit": self.visit,
            "condition": self.condition,
            "label": self.label,
            "cells": cells,
        }
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Trace:
        raw = json.loads(line)
        cells = raw["cells"]
        return cls(
            int(raw["site"]),
            int(raw["visit"]),
            str(raw["condition"]),
            [float(t) for t, _ in cells],
            [int(d) for _, d in cells],
            str(raw.get("label", "")),
        )


def trace_file(dataset: Path, condition: str) -> Path:
    return dataset / "traces" / f"{condition}.jsonl.gz"


def append(dataset: Path, trace: Trace) -> None:
    """Add one trace to its condition's file (gzip members concatenate: appending is safe)."""
    path = trace_file(dataset, trace.condition)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "at", encoding="utf-8") as out:
        out.write(trace.to_json() + "\n")


def load(dataset: Path, condition: str) -> list[Trace]:
    """Every complete trace of a condition (a line cut short by a crash is skipped)."""
    return list(_read(trace_file(dataset, condition)))


def _read(path: Path) -> Iterator[Trace]:
    if not path.exists():
        return
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        try:
            for line in lines:
                try:
                    yield Trace.from_json(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line: the visit is collected again
        except EOFError:
            return  # a gzip member cut short by a crash


def export_df(dataset: Path, condition: str, length: int = DF_LENGTH) -> Path:
    """Write ``df/<condition>.npz`` (X, y, visit), the DF code's input format."""
    traces = load(dataset, condition)
    path = dataset / "df" / f"{condition}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.stack([t.df_input(length) for t in traces]) if traces else np.zeros((0, length), np.int8)
    np.savez_compressed(
        path,
        X=x,
        y=np.array([t.site for t in traces], dtype=np.int64),
        visit=np.array([t.visit for t in traces], dtype=np.int64),
    )
    return path
