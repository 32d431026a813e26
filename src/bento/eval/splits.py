"""Closed-world folds in which no visit of the test set is ever trained or validated on.

Each site's visits are shuffled once and dealt into ``k`` groups; fold ``f`` tests on
group ``f``, validates on group ``f + 1`` and trains on the rest. A visit is one page load,
so "strict" means a visit's trace appears in exactly one of train, validation and test,
and every site appears in all three (closed world). The published Deep Fingerprinting
scripts drew validation traces from the same pool as test traces; here that cannot happen,
and :func:`folds` checks it.

    >>> sites = [0] * 4 + [1] * 4
    >>> visits = [0, 1, 2, 3] * 2
    >>> first = folds(sites, visits, k=4, seed=1)[0]
    >>> sorted(len(part) for part in (first.train, first.valid, first.test))
    [2, 2, 4]
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Fold:
    number: int
    train: list[int]  # indices into the dataset
    valid: list[int]
    test: list[int]


def folds(sites: Sequence[int], visits: Sequence[int], k: int, seed: int = 0) -> list[Fold]:
    """``k`` strict folds over traces given by their site and visit number (k >= 3)."""
    if k < 3:
        raise ValueError("strict folds need k >= 3: one group to test, one to validate, one to train")
    by_site: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, (site, visit) in enumerate(zip(sites, visits, strict=True)):
        by_site[site][visit].append(index)
    rng = random.Random(seed)
    groups: list[list[list[int]]] = [[] for _ in range(k)]  # group -> visits (each a list of indices)
    for site in sorted(by_site):
        site_visits = sorted(by_site[site])
        if len(site_visits) < k:
            raise ValueError(f"site {site} has {len(site_visits)} visits; {k} folds need at least {k}")
        rng.shuffle(site_visits)
        for n, visit in enumerate(site_visits):
            groups[n % k].append(by_site[site][visit])
    out = []
    for f in range(k):
        test = [i for visit in groups[f] for i in visit]
        valid = [i for visit in groups[(f + 1) % k] for i in visit]
        train = [i for g in range(k) if g not in (f, (f + 1) % k) for visit in groups[g] for i in visit]
        assert not (set(test) & set(valid) or set(test) & set(train) or set(valid) & set(train))
        out.append(Fold(f, train, valid, test))
    return out
