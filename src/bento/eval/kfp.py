"""k-FP (Hayes and Danezis, USENIX Security 2016): hand-made features and a random forest.

The features follow the paper's families, computed on the cell sequence: counts and
fractions of cells each way; where the outgoing and incoming cells sit in the sequence;
how outgoing cells concentrate in chunks of 20; cells per second; inter-arrival and
transmission-time statistics each way; the first and last 30 cells; and outgoing bursts.
Closed world, so the forest's own vote is the guess (the paper's k-NN over leaves serves
its open world).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bento.eval.traces import Trace

Vector = npt.NDArray[np.float64]
_CHUNK = 20
_CHUNKS = 70  # concentrations kept as features of their own (zero-padded)
_SECONDS = 20  # cells-per-second values kept as features of their own


def features(trace: Trace) -> Vector:
    t = np.asarray(trace.times, dtype=np.float64)
    d = np.asarray(trace.directions, dtype=np.int8)
    if len(d) == 0:
        return np.zeros(n_features())
    out_mask, in_mask = d > 0, d < 0
    n, n_out, n_in = len(d), int(out_mask.sum()), int(in_mask.sum())
    positions = np.arange(n, dtype=np.float64)
    values: list[float] = [n, n_out, n_in, n_out / n, n_in / n]
    for mask in (out_mask, in_mask):  # ordering
        values += _stats(positions[mask], ("mean", "std"))
    chunks = np.add.reduceat(out_mask.astype(np.float64), np.arange(0, n, _CHUNK))
    values += _stats(chunks, ("mean", "std", "median", "max", "min"))
    per_second = np.bincount(np.floor(t - t[0]).astype(np.int64)).astype(np.float64)
    values += _stats(per_second, ("mean", "std", "median", "max", "min"))
    for times in (t, t[out_mask], t[in_mask]):  # timing, all / out / in
        gaps = np.diff(times) if len(times) > 1 else np.zeros(1)
        values += _stats(gaps, ("max", "mean", "std", "q75"))
        values += _stats(times - t[0] if len(times) else np.zeros(1), ("q25", "median", "q75", "max"))
    head, tail = d[:30], d[-30:]
    values += [
        float((head > 0).sum()),
        float((head < 0).sum()),
        float((tail > 0).sum()),
        float((tail < 0).sum()),
    ]
    bursts = _bursts(d)
    values += [
        len(bursts),
        *(_stats(bursts, ("max", "mean"))),
        *(float((bursts > k).sum()) for k in (5, 10, 20)),
    ]
    values += [float(n_in) / max(1, n_out), float(t[-1] - t[0])]
    values += list(_padded(chunks, _CHUNKS)) + list(_padded(per_second, _SECONDS))
    return np.asarray(values, dtype=np.float64)


def n_features() -> int:
    return 5 + 4 + 5 + 5 + 3 * 8 + 4 + 6 + 2 + _CHUNKS + _SECONDS


def matrix(traces: Sequence[Trace]) -> npt.NDArray[np.float64]:
    return np.stack([features(t) for t in traces]) if traces else np.zeros((0, n_features()))


def accuracy(
    train: Sequence[Trace], test: Sequence[Trace], *, trees: int = 500, seed: int = 0, jobs: int = -1
) -> float:
    """Train a forest on ``train`` and return its accuracy on ``test`` (closed world)."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=jobs, oob_score=False)
    forest.fit(matrix(train), [t.site for t in train])
    guesses = forest.predict(matrix(test))
    return float(np.mean(guesses == np.asarray([t.site for t in test])))


def _stats(values: npt.ArrayLike, which: Sequence[str]) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return [0.0] * len(which)
    funcs: dict[str, Callable[[npt.NDArray[np.float64]], Any]] = {
        "mean": np.mean,
        "std": np.std,
        "median": np.median,
        "max": np.max,
        "min": np.min,
        "q25": lambda a: np.percentile(a, 25),
        "q75": lambda a: np.percentile(a, 75),
    }
    return [float(funcs[name](v)) for name in which]


def _bursts(d: npt.NDArray[np.int8]) -> npt.NDArray[np.float64]:
    """Lengths of the runs of consecutive outgoing cells."""
    out = np.concatenate(([0], (d > 0).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(out))
    return (edges[1::2] - edges[::2]).astype(np.float64)


def _padded(values: npt.NDArray[np.float64], length: int) -> npt.NDArray[np.float64]:
    out = np.zeros(length)
    out[: min(length, len(values))] = values[:length]
    return out
