"""A collection's schedule and deadline: rounds interleave conditions, and no round is
started that the deadline would cut."""

from __future__ import annotations

import datetime
import doctest
from collections import Counter

import pytest

import wf_rounds
from bento.cli import eval as eval_cli
from bento.eval import dataset, report, rounds, splits, traces


def test_a_round_visits_every_site_under_every_condition_once_with_the_conditions_in_turn() -> None:
    conditions = ["tor", "browser-0mb", "browser-1mb", "browser-7mb"]
    order = rounds.schedule(conditions, sites=list(range(100)), seed=7)
    assert Counter(order) == {(c, s): 1 for c in conditions for s in range(100)}
    # A site's conditions follow each other (the same moments of the network) ...
    for n in range(0, len(order), len(conditions)):
        assert len({site for _, site in order[n : n + len(conditions)]}) == 1
    # ... and each condition comes first as often as the others.
    assert set(Counter(order[n][0] for n in range(0, len(order), len(conditions))).values()) == {25}
    assert rounds.schedule(conditions, list(range(100)), seed=8) != order  # sites in a new order each round


def test_the_length_of_a_round_is_estimated_from_the_slowest_recent_one() -> None:
    assert rounds.estimate([], visits=400, parallel=2) == 400 * rounds.FIRST_GUESS_SECONDS / 2
    done = [
        wf_rounds.entry(n, ["tor"], 100, seconds=s, visits=400, parallel=2)
        for n, s in enumerate([3000, 1000, 1200, 1100])
    ]
    assert rounds.estimate(done, visits=400, parallel=2) == 1200  # the old slow one is forgotten
    assert rounds.estimate(done, visits=400, parallel=4) == 600


def test_the_deadline_is_the_earlier_of_the_clock_time_and_the_minutes() -> None:
    now = datetime.datetime(2026, 12, 7, 23, 30).timestamp()
    assert eval_cli.deadline(datetime.time(0, 15), None, now) == now + 45 * 60  # past midnight
    assert eval_cli.deadline(datetime.time(0, 15), 10, now) == now + 10 * 60
    assert eval_cli.deadline(None, None, now) is None


@pytest.mark.parametrize("module", [dataset, rounds, report, traces, splits, eval_cli])
def test_docstring_examples_run(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
