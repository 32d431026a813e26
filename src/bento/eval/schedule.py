"""What a delivery schedule would cost, and the most any attacker could learn from it, read
off the collected traces of Browser without one (``browser-0mb``) before it is collected.

With a schedule (``functions/browser/timing.py``) the link shows one of a few windows, so all
a perfect attacker learns of a visit is its window (its *class*). In a closed world of N
equally likely sites, the best guess given the class is the site most likely to land in it,
so no attack is right more often than ``(1/N) * sum over classes of max over sites of
P(class | site)``: at most (number of classes) / N, and 1/N (chance) with a single deadline.
Each visit's class is estimated conservatively: the page counts as ready when its transfer
ended on the link without a schedule (it was ready earlier at the box), and as big as the
cells that came down.

    >>> from bento.functions.browser.timing import Schedule
    >>> visits = [(0, 1.0, 900_000), (0, 1.2, 900_000), (1, 3.0, 900_000), (1, 2.0, 900_000)]
    >>> estimate(visits, Schedule((5.0, 10.0), 500_000)).bound  # site 1 is in both classes
    0.75
    >>> estimate(visits, Schedule((10.0,), 500_000)).bound  # one window: chance, 1/2
    0.5

``python -m bento.eval.schedule data/wf 5,10,20,40 10,20 20`` prints the estimate of each
schedule (at 500 KB/s; ``--rate`` to change it).
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bento.eval import dataset, traces
from bento.functions.browser.timing import DEFAULT_RATE, Schedule

Visit = tuple[int, float, int]  # site, seconds until its transfer ended, bytes down


@dataclass(frozen=True)
class Estimate:
    classes: dict[float | None, int]  # visits per deadline (None: no window would take it)
    bound: float  # the most any attack on the link is right (chance is 1 / sites)
    seconds: float  # mean seconds per page (the deadline; a page that fits none: the last)
    megabytes: float  # mean MB on the link, down (the window's size)


def visits(data: Path, condition: str = "browser-0mb") -> list[Visit]:
    out = []
    for trace in dataset.load(data, condition):
        down = int((np.asarray(trace.directions) < 0).sum()) * traces.CELL_LEN
        out.append((trace.site, float(trace.times[-1]) if len(trace) else 0.0, down))
    return out


def estimate(collected: Sequence[Visit], schedule: Schedule) -> Estimate:
    per_site: dict[int, Counter[float | None]] = defaultdict(Counter)
    for site, ready, size in collected:
        per_site[site][schedule.choose(ready, size)] += 1
    classes: Counter[float | None] = Counter()
    for counts in per_site.values():
        classes.update(counts)
    bound = sum(max(counts[c] / sum(counts.values()) for counts in per_site.values()) for c in classes) / len(
        per_site
    )
    last = schedule.deadlines[-1]
    seconds = statistics.fmean(
        d if d is not None else last for site in per_site.values() for d in site.elements()
    )
    sizes = [schedule.size(d) if d is not None else 0 for site in per_site.values() for d in site.elements()]
    return Estimate(dict(classes), bound, seconds, statistics.fmean(sizes) / 1e6)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bento.eval.schedule", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("schedules", nargs="+", help="deadlines in seconds, comma-separated: 5,10,20,40")
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE, help="bytes/s (default 500000)")
    args = parser.parse_args(argv)
    collected = visits(args.dataset)
    sites = len({site for site, _, _ in collected})
    print(f"{len(collected)} visits of {sites} sites under browser-0mb; chance {100 / sites:.1f}%")
    print("| deadlines (s) | visits per deadline | bound on any attack | seconds per page | MB down |")
    print("|---|---|---|---|---|")
    for text in args.schedules:
        schedule = Schedule(tuple(float(d) for d in text.split(",")), args.rate)
        found = estimate(collected, schedule)
        spread = ", ".join(
            f"{'none' if d is None else f'{d:g} s'}: {n}"
            for d, n in sorted(found.classes.items(), key=lambda kv: float("inf") if kv[0] is None else kv[0])
        )
        print(
            f"| {text} | {spread} | {100 * found.bound:.1f}% | {found.seconds:.1f} | {found.megabytes:.2f} |"
        )


if __name__ == "__main__":
    main()
