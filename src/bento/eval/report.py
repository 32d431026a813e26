"""The results as the paper's Table 1, with confidence intervals, the overheads and a plot.

Every visit is tested exactly once over the folds (:mod:`bento.eval.splits`), so an
attack's accuracy is its correct guesses over all visits, with a 95% Wilson score interval
(Wilson 1927; Brown, Cai and DasGupta 2001 recommend it for proportions near 0 and 1):

    >>> low, high = wilson(45, 50)
    >>> round(low, 3), round(high, 3)
    (0.786, 0.957)
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bento.eval import dataset, traces
from bento.eval.experiment import Result

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The paper's Table 1 (SIGCOMM 2021, section 7.3): Deep Fingerprinting's accuracy.
PAPER = {"tor": 93.9, "browser-0mb": 69.6, "browser-1mb": 8.25, "browser-7mb": 0.0}
CONDITIONS = {
    "tor": "plain Tor (browser-like client)",
    "browser-0mb": "Browser, no padding",
    "browser-1mb": "Browser, 1 MB padding",
    "browser-7mb": "Browser, 7 MB padding",
    "browser-cover": "Browser with Cover, no padding",
    "browser-deadlines": "Browser, delivered at 5/10/20/40 s",
    "browser-deadlines-20": "Browser, delivered at 20/40 s",
}
ATTACK_NAMES = {"df": "DF", "tiktok": "Tik-Tok", "kfp": "k-FP"}


Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``total`` trials."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Cell:
    correct: int
    total: int
    folds: int

    @property
    def mean(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.correct, self.total)

    def __str__(self) -> str:
        low, high = self.interval
        return f"{100 * self.mean:.1f}% ({100 * low:.1f}-{100 * high:.1f})"

    def of(self, folds: int) -> str:
        """As ``str``, saying so when fewer than all ``folds`` are in (a run still going)."""
        return str(self) + (f" [{self.folds} of {folds} folds]" if self.folds < folds else "")


def summarise(results: Sequence[Result]) -> dict[tuple[str, str], Cell]:
    """Per (condition, attack): correct guesses over every visit tested, over all folds."""
    grouped: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for result in results:
        grouped[(result.condition, result.attack)].append(result)
    return {
        key: Cell(sum(round(r.accuracy * r.test) for r in v), sum(r.test for r in v), len(v))
        for key, v in grouped.items()
    }


def overheads(
    data: Path, conditions: Sequence[str], visits: int | None = None
) -> dict[str, tuple[float, float, int, float]]:
    """Per condition (the first ``visits`` of each site): mean MB on the link, mean seconds
    per visit, visits, sites."""
    out = {}
    for condition in conditions:
        loaded = [t for t in dataset.load(data, condition) if visits is None or t.visit < visits]
        if loaded:
            megabytes = statistics.fmean(len(t) * traces.CELL_LEN / 1e6 for t in loaded)
            seconds = statistics.fmean(float(t.times[-1]) if len(t) else 0.0 for t in loaded)
            out[condition] = (megabytes, seconds, len(loaded), float(len({t.site for t in loaded})))
    return out


def markdown(results: Sequence[Result], data: Path, collected: Sequence[str] = (), folds: int = 0) -> str:
    """Table 1 (accuracy per condition and attack), and the cost of every condition ``collected``
    (those not attacked yet too: a defense added later has its cost before it has enough visits);
    a cell of fewer than ``folds`` folds says how many it has."""
    table = summarise(results)
    conditions = _ordered({key[0] for key in table})
    attacks = [a for a in ATTACK_NAMES if any(key[1] == a for key in table)]
    chance = {c: 1 / max(1, r.sites) for r in results for c in [r.condition]}
    lines = [
        f"{dataset.describe(data)}. Accuracy: correct guesses over every visit, 95% Wilson interval.",
        "",
        "| condition | " + " | ".join(ATTACK_NAMES[a] for a in attacks) + " | paper (DF) | chance |",
        "|---" * (len(attacks) + 3) + "|",
    ]
    for condition in conditions:
        cells = [table[(condition, a)].of(folds) if (condition, a) in table else "" for a in attacks]
        paper = f"{PAPER[condition]}%" if condition in PAPER else "(not in the paper)"
        lines.append(
            f"| {CONDITIONS.get(condition, condition)} | "
            + " | ".join(cells)
            + f" | {paper} | {100 * chance[condition]:.1f}% |"
        )
    conditions = _ordered(set(conditions) | set(collected))
    cost = overheads(data, conditions, max((r.visits for r in results), default=0) or None)
    if "tor" in cost:
        base_mb, base_s = cost["tor"][0], cost["tor"][1]
        lines += [
            "",
            "| condition | MB on the link | vs plain Tor | seconds per visit | vs plain Tor | visits |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for condition in conditions:
            if condition in cost:
                mb, s, n, _ = cost[condition]
                lines.append(
                    f"| {CONDITIONS.get(condition, condition)} | {mb:.2f} | {mb / base_mb:.2f} | {s:.2f} | "
                    f"{s / base_s if base_s else 0:.2f} | {n} |"
                )
    return "\n".join(lines) + "\n"


def plot(results: Sequence[Result], path: Path) -> Path:
    """Bars of accuracy per condition and attack, with the fold spread and the paper's DF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarise(results)
    conditions = _ordered({key[0] for key in table})
    attacks = [a for a in ATTACK_NAMES if any(key[1] == a for key in table)]
    width = 0.8 / (len(attacks) + 1)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for n, attack in enumerate(attacks):
        # Only what ran: an attack not run on a condition (yet) is "not run", not a 0% bar.
        ran = [(i, table[(c, attack)]) for i, c in enumerate(conditions) if (c, attack) in table]
        missing = [i for i, c in enumerate(conditions) if (c, attack) not in table]
        means = [100 * cell.mean for _, cell in ran]
        below = [100 * (cell.mean - cell.interval[0]) for _, cell in ran]
        above = [100 * (cell.interval[1] - cell.mean) for _, cell in ran]
        xs = [i + n * width for i, _ in ran]
        axis.bar(xs, means, width, yerr=[below, above], capsize=3, label=ATTACK_NAMES[attack], color=f"C{n}")
        for i in missing:
            axis.text(i + n * width, 1, "not run", rotation=90, fontsize=7, ha="center", va="bottom")
    xs = [i + len(attacks) * width for i in range(len(conditions))]
    axis.bar(xs, [PAPER.get(c, 0) for c in conditions], width, color="lightgrey", label="paper (DF)")
    axis.set_xticks([i + width * len(attacks) / 2 for i in range(len(conditions))])
    axis.set_xticklabels([CONDITIONS.get(c, c) for c in conditions], rotation=15, ha="right", fontsize=8)
    axis.set_ylabel("attacker accuracy (%)")
    axis.set_ylim(0, 100)
    axis.legend()
    axis.set_title("Website fingerprinting on the client's link (closed world)")
    return _save(figure, path)


def cost_plot(results: Sequence[Result], data: Path, path: Path) -> Path:
    """Accuracy (with its interval) against cost, relative to plain Tor: bytes on the link and
    seconds per visit, a point per defense and attack; the best defense is low and to the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarise(results)
    conditions = _ordered({key[0] for key in table})
    cost = overheads(data, conditions, max((r.visits for r in results), default=0) or None)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    if "tor" in cost:
        markers = dict(zip(ATTACK_NAMES, "osD", strict=True))
        for axis, column, what in ((axes[0], 0, "MB on the link"), (axes[1], 1, "seconds per visit")):
            for (condition, attack), cell in sorted(table.items()):
                if condition not in cost:
                    continue
                x = cost[condition][column] / cost["tor"][column]
                low, high = cell.interval
                axis.errorbar(
                    [x], [100 * cell.mean], yerr=[[100 * (cell.mean - low)], [100 * (high - cell.mean)]],
                    marker=markers[attack], capsize=3, color=f"C{conditions.index(condition)}",
                )  # fmt: skip
                axis.annotate(
                    f"{ATTACK_NAMES[attack]}, {CONDITIONS.get(condition, condition)}",
                    (x, 100 * cell.mean), fontsize=6, xytext=(4, 2), textcoords="offset points",
                )  # fmt: skip
            chance = 100 / max(1, max(r.sites for r in results))
            axis.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.1f}%)")
            axis.set_xlabel(f"{what}, relative to plain Tor (log scale)")
            axis.set_xscale("log")
            axis.set_xticks([0.5, 1, 2, 3, 5, 10], ["0.5", "1", "2", "3", "5", "10"])
            axis.set_xlim(0.4, 12)
            axis.set_ylim(0, 100)
            axis.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("attacker accuracy (%)")
    figure.suptitle("What each defense costs, and what it leaves the attacks")
    return _save(figure, path)


def _ordered(conditions: set[str]) -> list[str]:
    """The paper's conditions in its order, then any other (a defense added since) by name."""
    return [c for c in CONDITIONS if c in conditions] + sorted(conditions - set(CONDITIONS))


def growth(results: Sequence[Result]) -> dict[tuple[str, str], dict[int, Cell]]:
    """Per (condition, attack): accuracy by visits per site (``Result.visits``)."""
    by_visits: dict[int, list[Result]] = defaultdict(list)
    for result in results:
        by_visits[result.visits].append(result)
    out: dict[tuple[str, str], dict[int, Cell]] = defaultdict(dict)
    for visits, some in sorted(by_visits.items()):
        for key, cell in summarise(some).items():
            out[key][visits] = cell
    return dict(out)


def growth_markdown(results: Sequence[Result]) -> str:
    """Accuracy against visits per site: how much the attacks gain from more visits to learn from."""
    table = growth(results)
    counts = sorted({n for cells in table.values() for n in cells})
    lines = [
        "| condition | attack | " + " | ".join(f"{n} visits" for n in counts) + " |",
        "|---|---|" + "---|" * len(counts),
    ]
    for condition in _ordered({c for c, _ in table}):
        for attack in [a for a in ATTACK_NAMES if (condition, a) in table]:
            cells = table[(condition, attack)]
            row = " | ".join(str(cells[n]) if n in cells else "" for n in counts)
            lines.append(f"| {CONDITIONS.get(condition, condition)} | {ATTACK_NAMES[attack]} | {row} |")
    return "\n".join(lines) + "\n"


def growth_plot(results: Sequence[Result], path: Path) -> Path:
    """Accuracy (with its interval) against visits per site, a line per condition and attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for (condition, attack), cells in sorted(growth(results).items()):
        counts = sorted(cells)
        means = [100 * cells[n].mean for n in counts]
        low = [m - 100 * cells[n].interval[0] for m, n in zip(means, counts, strict=True)]
        high = [100 * cells[n].interval[1] - m for m, n in zip(means, counts, strict=True)]
        label = f"{ATTACK_NAMES[attack]}, {CONDITIONS.get(condition, condition)}"
        axis.errorbar(counts, means, yerr=[low, high], marker="o", capsize=3, label=label)
    axis.set_xticks(sorted({n for cells in growth(results).values() for n in cells}))
    axis.set_xlabel("visits per site (folds train on all but two)")
    axis.set_ylabel("attacker accuracy (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=7)
    axis.set_title("Accuracy against visits per site")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    """Lay ``figure`` out, write it to ``path`` as a PNG and free it: every plot ends so."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
