"""The dataset in the repository (data/wf/): rounds written whole, read back exactly, and
every corrupt or mismatched file refused."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

import wf_rounds
from bento.eval import dataset
from bento.eval.dataset import DatasetError, RoundEntry, Visit

CONDITIONS = ["tor", "browser-0mb"]


def entry(number: int, conditions: list[str] = CONDITIONS) -> RoundEntry:
    return wf_rounds.entry(number, conditions, 3)


def a_round(seed: int) -> list[Visit]:
    rng = np.random.default_rng(seed)
    out = []
    for site in range(3):
        for n, condition in enumerate(CONDITIONS):
            size = int(rng.integers(1, 400))
            records = sorted(
                (float(t), int(d), int(length))
                for t, d, length in zip(
                    np.round(rng.uniform(0, 5, size), 6),
                    rng.choice([-1, 1], size),
                    rng.integers(40, 16_000, size),
                    strict=True,
                )
            )
            out.append(Visit(condition, site, 1000 * (2 * site + n), dataset.batches(records)))
    return out


def test_rounds_read_back_as_the_cells_that_were_captured(tmp_path: Path) -> None:
    written = [a_round(0), a_round(1)]
    for number, visits in enumerate(written):
        dataset.write_round(tmp_path, entry(number), visits)
    manifest = dataset.read_manifest(tmp_path)
    assert [r.visits for r in manifest.rounds] == [6, 6]
    for number, visits in enumerate(written):
        back = dataset.read_round(tmp_path, manifest.rounds[number])
        assert [(v.condition, v.site, v.start_ms) for v in back] == [
            (v.condition, v.site, v.start_ms) for v in visits
        ]
        for mine, theirs in zip(visits, back, strict=True):
            assert mine.batches.cells.tolist() == theirs.batches.cells.tolist()
            assert mine.batches.gaps_us.tolist() == theirs.batches.gaps_us.tolist()
    tor = dataset.load(tmp_path, "tor")
    assert sorted((t.site, t.visit) for t in tor) == [(s, v) for s in range(3) for v in range(2)]
    assert dataset.conditions(tmp_path) == CONDITIONS
    assert all(t.label == f"s{t.site + 1:03d}" for t in tor)
    assert dataset.describe(tmp_path).startswith("2 rounds collected 2026-12-07: 12 visits (0 failed)")


def test_a_visit_keeps_every_cell_in_order_with_microsecond_times() -> None:
    records = [(100.0, 1, 531), (100.0000004, 1, 531), (100.5, -1, 10 * 514 + 17), (100.5, 1, 531)]
    trace = dataset.batches(records).trace(site=0, number=0, condition="tor")
    assert trace.directions.tolist() == [1, 1] + [-1] * 10 + [1]
    assert trace.times.tolist() == [0.0, 0.0] + [0.5] * 11  # the batch order is the records'


def test_batches_never_overflow_their_cell_count() -> None:
    burst = [(1.0, -1, 60 * 514 + 17)] * 1000  # 60,000 cells at one timestamp
    visit = dataset.batches(burst)
    assert int(np.abs(visit.cells.astype(np.int64)).sum()) == 60_000
    assert visit.cells.min() >= -32767


def test_a_round_out_of_turn_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="would not follow"):
        dataset.write_round(tmp_path, entry(1), a_round(0))
    assert not (tmp_path / "manifest.json").exists()


def test_a_changed_round_file_is_refused(tmp_path: Path) -> None:
    written = dataset.write_round(tmp_path, entry(0), a_round(0))
    path = tmp_path / written.file
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="SHA-256"):
        dataset.read_round(tmp_path, written)
    path.unlink()
    with pytest.raises(DatasetError, match="missing"):
        list(dataset.traces(tmp_path))


def rewrite(tmp_path: Path, **arrays: np.ndarray) -> RoundEntry:
    """Replace round 0's file with ``arrays`` changed, and its digest in the manifest to match."""
    written = dataset.read_manifest(tmp_path).rounds[0]
    with np.load(tmp_path / written.file) as npz:
        kept = {name: npz[name] for name in npz.files}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{**kept, **arrays})
    (tmp_path / written.file).write_bytes(buffer.getvalue())
    return written.model_copy(update={"sha256": hashlib.sha256(buffer.getvalue()).hexdigest()})


@pytest.mark.parametrize(
    ("arrays", "error"),
    [
        ({"cells": np.ones(3, np.int16)}, "lengths disagree"),
        ({"gap_us": np.zeros(1, np.uint32)}, "lengths disagree"),
        ({"batches": np.ones(6, np.uint32)}, "lengths disagree"),
        ({"start_ms": np.ones(5, np.uint32)}, "lengths disagree"),
        (
            {
                "cells": -np.ones(0, np.int16),
                "gap_us": np.zeros(0, np.uint32),
                "batches": np.zeros(6, np.uint32),
            },
            "without cells",
        ),
        ({"site": np.array([0, 0, 1, 1, 2, 7], np.uint16)}, "outside the round"),
        ({"gap_us": np.zeros(5, np.float64)}, "not <class 'numpy.uint32'>"),
        ({"conditions": np.array(["tor", "browser-7mb"])}, "under conditions"),
        ({"extra": np.zeros(1)}, "holds arrays"),
    ],
)
def test_a_round_file_that_disagrees_with_itself_or_its_manifest_is_refused(
    tmp_path: Path, arrays: dict[str, np.ndarray], error: str
) -> None:
    dataset.write_round(tmp_path, entry(0), a_round(0))
    with pytest.raises(DatasetError, match=error):
        dataset.read_round(tmp_path, rewrite(tmp_path, **arrays))


def test_a_file_that_is_not_numpy_is_refused(tmp_path: Path) -> None:
    written = dataset.write_round(tmp_path, entry(0), a_round(0))
    junk = b"PK\x03\x04 not a zip"
    (tmp_path / written.file).write_bytes(junk)
    with pytest.raises(DatasetError, match="not a readable numpy archive"):
        dataset.read_round(tmp_path, written.model_copy(update={"sha256": hashlib.sha256(junk).hexdigest()}))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(surprise=1),  # an unknown field
        lambda m: m["rounds"][0].update(seconds=float("inf")),
        lambda m: m["rounds"][0].update(file="../../etc/passwd"),
        lambda m: m["rounds"][0].update(number=3),  # out of order
        lambda m: m.update(format="bento-wf/9"),
    ],
)
def test_a_manifest_that_is_not_exactly_ours_is_refused(tmp_path: Path, change: object) -> None:
    dataset.write_round(tmp_path, entry(0), a_round(0))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    change(manifest)  # type: ignore[operator]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest).replace("Infinity", "1e999"))
    with pytest.raises(DatasetError):
        dataset.read_manifest(tmp_path)


def test_a_condition_added_later_numbers_its_visits_from_zero(tmp_path: Path) -> None:
    dataset.write_round(tmp_path, entry(0), a_round(0))
    later = [*a_round(1), Visit("browser-timed", 0, 0, dataset.batches([(0.0, 1, 531)]))]
    dataset.write_round(tmp_path, entry(1, conditions=[*CONDITIONS, "browser-timed"]), later)
    assert [(t.site, t.visit) for t in dataset.load(tmp_path, "browser-timed")] == [(0, 0)]
    assert sorted({t.visit for t in dataset.load(tmp_path, "tor")}) == [0, 1]
    assert dataset.conditions(tmp_path) == [*CONDITIONS, "browser-timed"]


def test_a_batch_of_no_cells_is_refused(tmp_path: Path) -> None:
    written = dataset.write_round(tmp_path, entry(0), a_round(0))
    with np.load(tmp_path / written.file) as npz:
        cells = npz["cells"].copy()
    cells[len(cells) // 2] = 0
    with pytest.raises(DatasetError, match="without cells"):
        dataset.read_round(tmp_path, rewrite(tmp_path, cells=cells))
