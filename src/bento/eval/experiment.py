"""The attack run: every condition, attack and fold, each result saved as soon as it exists.

Results live in ``<dataset>/results/<condition>/<attack>/fold-<n>.json`` (and in
``first-<N>/`` below it, those on the first N visits of each site). A run that is
stopped (a 10-minute command limit, a closed laptop, a crash) loses at most the fold it was
training: run it again and it goes on where it stopped, skipping every result on disk.

A result names the data and settings it came from (``data``, a digest), and is used again
only for exactly those: attacking a collection that has grown since, or with other
settings, trains afresh. ``Settings.visits`` attacks the first visits of each site only,
for a look at a collection still under way (it collects whole rounds of visits).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bento.eval import dataset, splits, traces
from bento.eval.traces import Trace

ATTACKS = ("kfp", "df", "tiktok")
# Settings added after results were committed: their default, and the attacks they change.
LATER_SETTINGS: dict[str, tuple[object, tuple[str, ...]]] = {"df_patience": (0, ("df", "tiktok"))}


@dataclass(frozen=True)
class Settings:
    folds: int = 5
    df_epochs: int = 30
    df_patience: int = 0  # 0: exactly df_epochs, as published (see df.accuracy)
    df_length: int = traces.DF_LENGTH
    kfp_trees: int = 500
    seed: int = 0
    visits: int | None = None  # the first visits of each site only (None: all)


@dataclass(frozen=True)
class Result:
    condition: str
    attack: str
    fold: int
    accuracy: float
    sites: int
    train: int
    valid: int
    test: int
    seconds: float
    detail: dict[str, Any]
    visits: int = 0  # visits per site in the data
    data: str = ""  # digest of the visits used and the settings: see _digest


def result_path(data: Path, condition: str, attack: str, fold: int, visits: int | None = None) -> Path:
    """Where a fold's result is kept (those on the first ``visits`` of each site apart)."""
    first = f"first-{visits}/" if visits is not None else ""
    return data / "results" / condition / attack / f"{first}fold-{fold}.json"


def run(
    data: Path,
    conditions: Sequence[str],
    attacks: Sequence[str],
    settings: Settings,
    *,
    say: Callable[[str], None] = lambda _: None,
    train: bool = True,
    first_folds: int | None = None,
) -> list[Result]:
    """Run what is missing; returns every result, old and new. ``train`` False: only the
    results on disk (a run still going, or stopped, is reported as far as it got).
    ``first_folds``: train only folds numbered below it, so that a long run gives every
    condition a figure before it gives any all its folds (the rest in a later run)."""
    for attack in attacks:
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}: choose from {', '.join(ATTACKS)}")
    results = []
    for condition in conditions:
        loaded = [
            t for t in dataset.load(data, condition) if settings.visits is None or t.visit < settings.visits
        ]
        if not loaded:
            say(f"{condition}: no visits in {data}; collect them first")
            continue
        per_site = Counter(t.site for t in loaded)
        if short := sorted(s for s, n in per_site.items() if n < settings.folds):
            # A visit that failed in collection leaves its site short: strict folds need one
            # visit of every site in each, so the site is left out (closed world, one fewer).
            say(f"{condition}: left out {len(short)} site(s) with fewer than {settings.folds} visits")
            loaded = [t for t in loaded if t.site not in short]
        if len({t.site for t in loaded}) < 2:
            # A condition added to the collection later has fewer rounds than the others: it is
            # attacked once it has a visit of each site for every fold (its cost is reported before).
            say(f"{condition}: too few visits for {settings.folds} folds yet; collect more rounds")
            continue
        plan = splits.folds(
            [t.site for t in loaded], [t.visit for t in loaded], settings.folds, settings.seed
        )
        for attack in attacks:
            digest = _digest(loaded, attack, settings)
            for fold in plan:
                path = result_path(data, condition, attack, fold.number, settings.visits)
                if path.exists() and (kept := Result(**json.loads(path.read_text()))).data == digest:
                    results.append(kept)
                    continue
                if not train or (first_folds is not None and fold.number >= first_folds):
                    say(f"{condition}: {attack}, fold {fold.number + 1} of {len(plan)} not trained yet")
                    continue
                say(f"{condition}: {attack}, fold {fold.number + 1} of {len(plan)}")
                result = _one(condition, attack, fold, loaded, settings, say)
                result = replace(result, visits=1 + max(t.visit for t in loaded), data=digest)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(asdict(result), indent=1))
                tmp.replace(path)  # a result is on disk whole or not at all
                results.append(result)
    return results


def _one(
    condition: str,
    attack: str,
    fold: splits.Fold,
    loaded: Sequence[Trace],
    settings: Settings,
    say: Callable[[str], None],
) -> Result:
    def pick(indices: list[int]) -> list[Trace]:
        return [loaded[i] for i in indices]

    started = time.monotonic()
    if attack == "kfp":
        from bento.eval import kfp

        # A forest needs no validation set: it trains on both.
        accuracy = kfp.accuracy(
            pick(fold.train + fold.valid), pick(fold.test), trees=settings.kfp_trees, seed=settings.seed
        )
        detail: dict[str, Any] = {"trees": settings.kfp_trees}
    else:
        from bento.eval import df

        out = df.accuracy(
            pick(fold.train),
            pick(fold.valid),
            pick(fold.test),
            kind=attack,
            length=settings.df_length,
            epochs=settings.df_epochs,
            patience=settings.df_patience,
            seed=settings.seed,
            progress=lambda epoch, score: say(f"  epoch {epoch}: validation accuracy {score:.3f}"),
        )
        accuracy = out["accuracy"]
        detail = {
            "epochs": settings.df_epochs,
            "patience": settings.df_patience,
            "trained_epochs": out["trained"],
            "best_epoch": out["epoch"],
            "valid_accuracy": out["valid_accuracy"],
        }
    return Result(
        condition=condition,
        attack=attack,
        fold=fold.number,
        accuracy=accuracy,
        sites=len({t.site for t in loaded}),
        train=len(fold.train),
        valid=len(fold.valid),
        test=len(fold.test),
        seconds=round(time.monotonic() - started, 1),
        detail=detail,
    )


def _digest(loaded: Sequence[Trace], attack: str, settings: Settings) -> str:
    """What a result depends on: the visits attacked, the attack, and its settings."""
    attacked = sorted((t.site, t.visit) for t in loaded)
    # Not under the key "visits": the settings have a field of that name, which overwrote the
    # visits attacked, so a result was taken again after the collection had grown.
    used = {**asdict(settings), "attacked": attacked, "attack": attack}
    # A setting added later counts only away from its default, which is what every result
    # before it was computed with, and only for the attacks it changes: those results stay valid.
    for later, (default, changes) in LATER_SETTINGS.items():
        if used[later] == default or attack not in changes:
            del used[later]
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]
