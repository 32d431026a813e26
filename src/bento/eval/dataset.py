"""The fingerprinting dataset kept in the repository (``data/wf/``): whole rounds of visits.

A *round* is one visit of every site under every condition, made together so that the
conditions see the same moments of the network. Each round is one compressed numpy file,
written once and never changed; ``manifest.json`` lists the rounds with when, where and how
they were collected, and each file's SHA-256. A collection appends rounds, so a dataset
grows across sessions and a commit adds files without rewriting any.

A visit is kept as *batches*: the cells that crossed the watched link in one direction at
one capture timestamp (the TLS records of a packet). That is exactly what the cell
sequence of :class:`~bento.eval.traces.Trace` holds, in a tenth of the space:

    >>> visit = batches([(10.0, 1, 531), (10.25, -1, 2 * 514 + 17), (10.25, -1, 531)])
    >>> visit.gaps_us.tolist(), visit.cells.tolist()
    ([0, 250000], [1, -3])
    >>> trace = visit.trace(site=4, number=0, condition="tor")
    >>> trace.directions.tolist(), trace.times.tolist()
    ([1, -1, -1, -1], [0.0, 0.25, 0.25, 0.25])

A round file holds, for its V visits and their B batches in all (README.md in the
dataset says the same for readers without Bento):

    condition  uint8[V]   index into the file's ``conditions`` (str[C])
    site       uint16[V]  the corpus site's index (its name is ``s`` + index + 1, 3 digits)
    start_ms   uint32[V]  when the visit began, milliseconds after the round began
    batches    uint32[V]  how many batches the visit has (the visits' batches follow each other)
    gap_us     uint32[B]  microseconds since the visit's previous batch (0 for its first)
    cells      int16[B]   cells in the batch: + from the client, - towards it (never 0)

Reading checks every file against the manifest's digest and every array's type and shape:
a corrupt or mismatched file is refused with :class:`DatasetError`, never read in part.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bento.errors import BentoError
from bento.eval.traces import Trace, cells_in_record

FORMAT = "bento-wf/1"
MANIFEST = "manifest.json"
ROUNDS = "rounds"
MAX_ROUNDS = 10_000
MAX_FILE_BYTES = 64 * 1024 * 1024  # a round of 100 sites x 5 conditions is about 1 MB
_ARRAYS = {
    "conditions": np.str_,
    "condition": np.uint8,
    "site": np.uint16,
    "start_ms": np.uint32,
    "batches": np.uint32,
    "gap_us": np.uint32,
    "cells": np.int16,
}
_CELLS_MAX = int(np.iinfo(np.int16).max)


class DatasetError(BentoError):
    """A dataset file that is corrupt, or does not match its manifest."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Name = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9.-]*$")


class Machine(_Strict):
    host: str = Field(max_length=255)
    cpus: int = Field(ge=1, le=4096)
    memory_gib: float = Field(ge=0, le=1 << 20)
    kernel: str = Field(max_length=255)
    tor: str = Field(max_length=255)


class TestnetOptions(_Strict):
    __test__ = False  # not a pytest class
    relays: int = Field(ge=0, le=1000)
    exits: int = Field(ge=0, le=1000)
    bento_boxes: int = Field(ge=0, le=1000)
    hop_delay_ms: float = Field(ge=0, le=10_000)
    web_delay_ms: float = Field(ge=0, le=10_000)
    corpus_seed: int = Field(ge=0, le=1 << 32)
    consensus_lifetime: int | None = Field(default=None, ge=0, le=1 << 20)


class RoundEntry(_Strict):
    """One round in the manifest: its file, and how it was collected."""

    number: int = Field(ge=0, lt=MAX_ROUNDS)
    file: str = Field(pattern=r"^rounds/round-[0-9]{4}\.npz$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    started: str = Field(max_length=40, description="UTC, ISO 8601")
    seconds: float = Field(ge=0, le=1e6)
    commit: str = Field(max_length=64, description="the code's git commit (+dirty if changed)")
    machine: Machine
    testnet: TestnetOptions
    parallel: int = Field(ge=1, le=64, description="victims visiting at once")
    conditions: list[str] = Field(min_length=1, max_length=32)
    sites: int = Field(ge=1, le=10_000, description="the first N corpus sites")
    visits: int = Field(ge=0, le=1_000_000)
    missing: list[str] = Field(default=[], max_length=10_000, description="visits that failed")
    load_average: tuple[float, float] = Field(description="1-minute load at the start and the end")


class Manifest(_Strict):
    format: str = Field(pattern=f"^{FORMAT}$")
    rounds: list[RoundEntry] = Field(default=[], max_length=MAX_ROUNDS)


@dataclass(frozen=True)
class Batches:
    """One visit: its batches of cells."""

    gaps_us: npt.NDArray[np.uint32]
    cells: npt.NDArray[np.int16]

    def trace(self, site: int, number: int, condition: str) -> Trace:
        """The visit's cell sequence, one entry per cell."""
        counts = np.abs(self.cells.astype(np.int64))
        times = np.cumsum(self.gaps_us, dtype=np.int64) / 1e6
        return Trace(
            site,
            number,
            condition,
            np.repeat(times, counts),
            np.repeat(np.sign(self.cells).astype(np.int8), counts),
            site_label(site),
        )


def site_label(site: int) -> str:
    """The corpus's name of site ``site`` (see bento.testnet.corpus)."""
    return f"s{site + 1:03d}"


def batches(records: Iterable[tuple[float, int, int]]) -> Batches:
    """TLS records ``(time in s, direction, length)``, in time order, as a visit's batches."""
    gaps: list[int] = []
    cells: list[int] = []
    start: int | None = None
    previous = 0
    for time, direction, length in records:
        at = round(time * 1e6)
        start = at if start is None else start
        at -= start
        n = cells_in_record(length)
        if (
            cells
            and at == previous
            and (cells[-1] > 0) == (direction > 0)
            and abs(cells[-1]) + n <= _CELLS_MAX
        ):
            cells[-1] += direction * n
            continue
        gaps.append(at - previous)
        cells.append(direction * n)
        previous = at
    return Batches(np.array(gaps, dtype=np.uint32), np.array(cells, dtype=np.int16))


@dataclass(frozen=True)
class Visit:
    condition: str
    site: int
    start_ms: int
    batches: Batches


def write_round(dataset: Path, entry: RoundEntry, visits: Sequence[Visit]) -> RoundEntry:
    """Write a round's file, then add it to the manifest: each atomically, so a crash leaves
    the dataset as it was or with the whole round. Returns the entry with the file's digest."""
    manifest = read_manifest(dataset)
    if entry.number != len(manifest.rounds):
        raise DatasetError(f"round {entry.number} would not follow the {len(manifest.rounds)} in {dataset}")
    names = list(entry.conditions)
    unknown = {v.condition for v in visits} - set(names)
    if unknown:
        raise DatasetError(f"visits under conditions the round does not name: {sorted(unknown)}")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        conditions=np.array(names, dtype=np.str_),
        condition=np.array([names.index(v.condition) for v in visits], dtype=np.uint8),
        site=np.array([v.site for v in visits], dtype=np.uint16),
        start_ms=np.array([v.start_ms for v in visits], dtype=np.uint32),
        batches=np.array([len(v.batches.cells) for v in visits], dtype=np.uint32),
        gap_us=np.concatenate([v.batches.gaps_us for v in visits] or [np.zeros(0, np.uint32)]),
        cells=np.concatenate([v.batches.cells for v in visits] or [np.zeros(0, np.int16)]),
    )
    data = buffer.getvalue()
    entry = entry.model_copy(
        update={
            "file": f"{ROUNDS}/round-{entry.number:04d}.npz",
            "sha256": hashlib.sha256(data).hexdigest(),
            "visits": len(visits),
        }
    )
    _write_atomically(dataset / entry.file, data)
    updated = manifest.model_copy(update={"rounds": [*manifest.rounds, entry]})
    _write_atomically(dataset / MANIFEST, (updated.model_dump_json(indent=1) + "\n").encode())
    return entry


def read_manifest(dataset: Path) -> Manifest:
    """The dataset's manifest (an empty one if the dataset is new)."""
    path = dataset / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Manifest(format=FORMAT)
    if len(raw) > MAX_FILE_BYTES:
        raise DatasetError(f"{path} is {len(raw)} bytes: not a manifest")
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise DatasetError(f"{path} is not a valid manifest: {exc.errors()[0]['msg']}") from None
    if [r.number for r in manifest.rounds] != list(range(len(manifest.rounds))):
        raise DatasetError(f"{path}: the rounds are not numbered 0, 1, 2, ... in order")
    return manifest


def read_round(dataset: Path, entry: RoundEntry) -> list[Visit]:
    """A round's visits, after checking its file against the manifest and itself."""
    path = dataset / entry.file
    try:
        raw = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else b""
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing", fix="check out the dataset again (git)") from None
    if hashlib.sha256(raw).hexdigest() != entry.sha256:
        raise DatasetError(f"{path} does not match the manifest's SHA-256: corrupt or replaced")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path} is not a readable numpy archive: {exc}") from None
    return _visits(path, entry, arrays)


def _visits(path: Path, entry: RoundEntry, arrays: dict[str, npt.NDArray[Any]]) -> list[Visit]:
    if set(arrays) != set(_ARRAYS):
        raise DatasetError(f"{path} holds arrays {sorted(arrays)}, not {sorted(_ARRAYS)}")
    for name, kind in _ARRAYS.items():
        if not np.issubdtype(arrays[name].dtype, kind) or arrays[name].ndim != 1:
            raise DatasetError(f"{path}: {name} is {arrays[name].dtype}[{arrays[name].ndim}d], not {kind}")
    names = [str(c) for c in arrays["conditions"]]
    if names != entry.conditions:
        raise DatasetError(f"{path} is under conditions {names}, the manifest says {entry.conditions}")
    counts = arrays["batches"].astype(np.int64)
    per_visit = {len(arrays[n]) for n in ("condition", "site", "start_ms", "batches")}
    per_batch = {int(counts.sum()), len(arrays["cells"]), len(arrays["gap_us"])}
    if per_visit != {entry.visits} or len(per_batch) != 1:
        raise DatasetError(f"{path}: its arrays' lengths disagree with each other or the manifest")
    if np.any(arrays["cells"] == 0) or np.any(arrays["batches"] == 0):
        raise DatasetError(f"{path}: visits or batches without cells")
    if np.any(arrays["condition"] >= len(names)) or np.any(arrays["site"] >= entry.sites):
        raise DatasetError(f"{path}: a visit names a condition or site outside the round")
    ends = np.cumsum(counts)
    return [
        Visit(
            names[int(arrays["condition"][i])],
            int(arrays["site"][i]),
            int(arrays["start_ms"][i]),
            Batches(arrays["gap_us"][end - n : end], arrays["cells"][end - n : end]),
        )
        for i, (end, n) in enumerate(zip(ends.tolist(), counts.tolist(), strict=True))
    ]


def load(dataset: Path, condition: str) -> list[Trace]:
    """Every visit of ``condition`` in the dataset (see :func:`traces`)."""
    return list(traces(dataset, [condition]))


def traces(dataset: Path, conditions: Sequence[str] | None = None) -> Iterator[Trace]:
    """Every visit in the dataset (under ``conditions`` only, if given), round by round.

    A visit's number counts the rounds before it that collected its condition, so a
    condition added in a later session still has visits 0, 1, 2, ...
    """
    earlier: dict[str, int] = defaultdict(int)
    for entry in read_manifest(dataset).rounds:
        if conditions is None or set(conditions) & set(entry.conditions):
            for visit in read_round(dataset, entry):
                if conditions is None or visit.condition in conditions:
                    yield visit.batches.trace(visit.site, earlier[visit.condition], visit.condition)
        for condition in entry.conditions:
            earlier[condition] += 1


def conditions(dataset: Path) -> list[str]:
    """Every condition collected, in the order of first collection."""
    seen: dict[str, None] = {}
    for entry in read_manifest(dataset).rounds:
        seen.update(dict.fromkeys(entry.conditions))
    return list(seen)


def describe(dataset: Path) -> str:
    """One line on what the dataset holds: rounds, visits, when, and its size on disk."""
    rounds = read_manifest(dataset).rounds
    if not rounds:
        return f"{dataset}: no rounds yet"
    visits = sum(r.visits for r in rounds)
    size = sum((dataset / r.file).stat().st_size for r in rounds)
    days = sorted({r.started[:10] for r in rounds})
    when = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    missing = sum(len(r.missing) for r in rounds)
    return (
        f"{len(rounds)} rounds collected {when}: {visits} visits ({missing} failed), "
        f"{size / 1e6:.1f} MB, {size / max(1, visits) / 1e3:.1f} KB a visit"
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file beside ``path``, fsync it, rename it over ``path``, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp made it 0600; the dataset is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
