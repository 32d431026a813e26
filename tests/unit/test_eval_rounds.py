"""A collection's schedule and deadline: rounds interleave conditions, and no round is
started that the deadline would cut."""

from __future__ import annotations

import asyncio
import datetime
import doctest
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import wf_rounds
from bento.cli import eval as eval_cli
from bento.errors import BentoError
from bento.eval import dataset, report, rounds, splits, traces
from bento.testnet.corpus import Corpus, Site


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


class StandInVictim:
    """A victim whose visits take ``seconds`` and see one cell each way; the sites named in
    ``failing`` fail every time. The real one is exercised in tests/e2e/test_eval_pipeline.py."""

    seconds = 0.0
    failing: frozenset[str] = frozenset()

    def __init__(self, *_: object) -> None:
        pass

    async def __aenter__(self) -> StandInVictim:
        return self

    async def __aexit__(self, *_: object) -> None:
        pass

    async def visit(self, condition: str, site: Site) -> list[tuple[float, int, int]]:
        await asyncio.sleep(self.seconds)
        if site.name in self.failing:
            raise OSError(f"{site.name} does not answer")
        return [(100.0, 1, 531), (100.25, -1, 531)]


class StandInTestnet:
    corpus = Corpus(seed=0, sites=4)


async def collect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> rounds.Outcome:
    monkeypatch.setattr(rounds, "Victim", StandInVictim)
    testnet_options = wf_rounds.entry(0, ["tor"], 1).testnet
    return await rounds.collect(
        StandInTestnet(),  # type: ignore[arg-type]
        tmp_path / "data",
        ["tor", "browser-0mb"],
        4,
        work=tmp_path / "work",
        options=testnet_options,
        **options,
    )


async def test_rounds_are_added_until_the_dataset_holds_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StandInVictim, "failing", frozenset({"s002"}))
    outcome = await collect(tmp_path, monkeypatch, visits=2)
    assert [r.number for r in outcome.rounds] == [0, 1] and "holds 2 rounds" in outcome.stopped
    for entry in dataset.read_manifest(tmp_path / "data").rounds:
        assert entry.visits == 6 and sorted(entry.missing) == ["browser-0mb s002", "tor s002"]
    assert sorted({t.site for t in dataset.load(tmp_path / "data", "tor")}) == [0, 2, 3]
    again = await collect(tmp_path, monkeypatch, visits=2)
    assert again.rounds == []


async def test_a_round_the_deadline_cuts_is_dropped_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StandInVictim, "seconds", 0.1)  # 8 visits, two at a time: 0.4 s a round
    monkeypatch.setattr(rounds, "FIRST_GUESS_SECONDS", 0.0)  # so the first round is started
    outcome = await collect(tmp_path, monkeypatch, deadline=time.time() + 0.25)
    assert outcome.rounds == [] and "the deadline came in round 0" in outcome.stopped
    assert not (tmp_path / "data" / "manifest.json").exists()


async def test_visits_that_keep_failing_stop_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StandInVictim, "failing", frozenset(f"s00{n}" for n in range(1, 5)))
    with pytest.raises(BentoError, match="10 visits in a row failed"):
        await collect(tmp_path, monkeypatch, visits=1)
    assert dataset.read_manifest(tmp_path / "data").rounds == []


def test_the_timing_defense_is_collected_by_default_as_browser_asks_for_it() -> None:
    from bento.cli.main import build_parser
    from bento.eval import collect
    from bento.functions.browser import client

    collect.check_conditions(["browser-deadlines"])
    options = collect.BROWSER["browser-deadlines"]
    assert options.pad == 0 and options.timing is not None
    assert options.timing.schedule().deadlines == (5.0, 10.0, 20.0, 40.0)
    assert client._arguments("http://www.s001.test/", options)[1] == 0  # Browser takes it as it is
    args = build_parser().parse_args(["eval", "wf", "collect", "data/wf"])
    assert args.conditions == ["tor", "browser-0mb", "browser-1mb", "browser-7mb", "browser-deadlines"]
