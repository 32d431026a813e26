"""The attacks learn what distinguishes sites, on traces whose sites differ by construction."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

import wf_rounds
from bento.eval import kfp, splits
from bento.eval.traces import Trace

pytest.importorskip("sklearn")


def synthetic(sites: int, visits: int, seed: int = 0) -> list[Trace]:
    """Each site has its own burst pattern; each visit jitters it (sizes, order, timing)."""
    out = []
    for site in range(sites):
        shape = random.Random(site)
        pattern = [(shape.choice([1, -1]), shape.randint(1, 40)) for _ in range(shape.randint(10, 40))]
        for visit in range(visits):
            rng = random.Random(seed * 1_000_003 + site * 1009 + visit)
            times, directions, now = [], [], 0.0
            for direction, length in pattern:
                for _ in range(max(1, int(length * rng.uniform(0.7, 1.3)))):
                    now += rng.expovariate(200.0)
                    times.append(now)
                    directions.append(direction if rng.random() > 0.05 else -direction)
            out.append(Trace(site, visit, "synthetic", times, directions))
    return out


def test_kfp_tells_sites_apart() -> None:
    traces = synthetic(10, 6)
    fold = splits.folds([t.site for t in traces], [t.visit for t in traces], k=3)[0]
    train = [traces[i] for i in fold.train + fold.valid]
    test = [traces[i] for i in fold.test]
    assert kfp.accuracy(train, test, trees=100, jobs=1) > 0.6  # chance is 0.1


def test_features_have_a_fixed_length_even_for_an_empty_trace() -> None:
    assert kfp.features(Trace(0, 0, "c", [], [])).shape == (kfp.n_features(),)
    assert kfp.features(synthetic(1, 1)[0]).shape == (kfp.n_features(),)


@pytest.mark.parametrize("kind", ["df", "tiktok"])
def test_deep_fingerprinting_learns_and_never_sees_a_test_visit(kind: str) -> None:
    pytest.importorskip("torch")
    from bento.eval import df

    traces = synthetic(4, 6)
    fold = splits.folds([t.site for t in traces], [t.visit for t in traces], k=3)[0]
    pick = lambda idx: [traces[i] for i in idx]  # noqa: E731
    # Short inputs and one batch per epoch keep it quick; batch normalisation's running
    # statistics need a few dozen steps before the evaluated network settles.
    result = df.accuracy(
        pick(fold.train), pick(fold.valid), pick(fold.test), kind=kind, length=500, epochs=40, batch=64
    )
    assert result["accuracy"] > 0.5  # chance is 0.25
    assert 1 <= result["epoch"] <= 40


def test_patience_trains_deep_fingerprinting_until_validation_stops_improving() -> None:
    pytest.importorskip("torch")
    from bento.eval import df

    traces = synthetic(4, 6)
    fold = splits.folds([t.site for t in traces], [t.visit for t in traces], k=3)[0]
    pick = lambda idx: [traces[i] for i in idx]  # noqa: E731
    parts = pick(fold.train), pick(fold.valid), pick(fold.test)
    fixed = df.accuracy(*parts, length=300, epochs=2, batch=64)
    assert fixed["trained"] == 2  # no patience: the epochs asked for, as published
    patient = df.accuracy(*parts, length=300, epochs=2, patience=3, batch=64)
    # Past the 2 epochs asked for, until 3 epochs in a row have not beaten the best.
    assert patient["trained"] > 2
    assert patient["trained"] - patient["epoch"] == 3


def test_strict_folds_keep_every_visit_in_one_part_only() -> None:
    traces = synthetic(4, 10)
    all_folds = splits.folds([t.site for t in traces], [t.visit for t in traces], k=5, seed=3)
    tested = sorted(i for fold in all_folds for i in fold.test)
    assert tested == list(range(len(traces)))  # every trace is tested exactly once
    for fold in all_folds:
        parts = [
            {(traces[i].site, traces[i].visit) for i in part} for part in (fold.train, fold.valid, fold.test)
        ]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert {traces[i].site for i in fold.test} == set(range(4))  # closed world


def test_too_few_visits_for_the_folds_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        splits.folds([0, 0, 0], [0, 1, 2], k=5)


def test_results_are_reused_only_for_the_same_visits_and_settings(tmp_path: Path) -> None:
    from bento.eval import experiment

    wf_rounds.write_traces(tmp_path, [replace(trace, condition="tor") for trace in synthetic(5, 6)])
    quick = experiment.Settings(folds=3, kfp_trees=20, visits=3)
    first = experiment.run(tmp_path, ["tor"], ["kfp"], quick)
    assert [r.visits for r in first] == [3, 3, 3] and all(r.test == 5 for r in first)
    assert experiment.run(tmp_path, ["tor"], ["kfp"], quick) == first  # read back, not retrained
    # More visits (a collection that went on) is other data: the folds are trained afresh.
    fuller = experiment.run(tmp_path, ["tor"], ["kfp"], replace(quick, visits=None))
    assert [r.visits for r in fuller] == [6, 6, 6] and all(r.test == 10 for r in fuller)
    assert {r.data for r in fuller}.isdisjoint({r.data for r in first})
    # The same settings on a collection grown by a round: trained afresh, never the old folds.
    seventh = [replace(t, condition="tor", visit=6) for t in synthetic(5, 1)]
    wf_rounds.write_round(tmp_path, 6, seventh)
    grown = experiment.run(tmp_path, ["tor"], ["kfp"], replace(quick, visits=None))
    assert [r.visits for r in grown] == [7, 7, 7]
    assert {r.data for r in grown}.isdisjoint({r.data for r in fuller})


def test_a_setting_added_later_keeps_the_results_made_before_it(tmp_path: Path) -> None:
    from bento.eval import experiment

    wf_rounds.write_traces(tmp_path, [replace(t, condition="tor") for t in synthetic(5, 3)])
    quick = experiment.Settings(folds=3, kfp_trees=20)
    first = experiment.run(tmp_path, ["tor"], ["kfp"], quick)
    # The digest a result had before df_patience existed: the settings without it.
    loaded = experiment.dataset.load(tmp_path, "tor")
    used = {
        **experiment.asdict(quick),
        "attacked": sorted((t.site, t.visit) for t in loaded),
        "attack": "kfp",
    }
    del used["df_patience"]
    before = experiment.hashlib.sha256(experiment.json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]
    assert {r.data for r in first} == {before}
    # DF's patience changes nothing of k-FP: its results are read back, not trained again.
    assert experiment.run(tmp_path, ["tor"], ["kfp"], replace(quick, df_patience=5), train=False) == first
    patient = experiment._digest(loaded, "df", replace(quick, df_patience=5))
    assert patient != experiment._digest(loaded, "df", quick)  # away from its default, it counts for DF


def test_first_folds_gives_every_condition_a_figure_before_any_gets_all(tmp_path: Path) -> None:
    from bento.eval import experiment

    made = synthetic(5, 3)
    wf_rounds.write_traces(tmp_path, [replace(t, condition=c) for t in made for c in ("tor", "browser-0mb")])
    quick = experiment.Settings(folds=3, kfp_trees=20)
    said: list[str] = []
    first = experiment.run(tmp_path, ["tor", "browser-0mb"], ["kfp"], quick, first_folds=1, say=said.append)
    assert sorted((r.condition, r.fold) for r in first) == [("browser-0mb", 0), ("tor", 0)]
    assert sum("not trained yet" in line for line in said) == 4
    rest = experiment.run(tmp_path, ["tor", "browser-0mb"], ["kfp"], quick)  # a later run: the others
    assert len(rest) == 6 and [r for r in rest if r.fold == 0] == first  # the first ones read back


def test_a_site_short_of_visits_is_left_out_not_the_condition(tmp_path: Path) -> None:
    from bento.eval import experiment

    made = [replace(t, condition="tor") for t in synthetic(5, 4)]
    wf_rounds.write_traces(tmp_path, [t for t in made if not (t.site == 2 and t.visit == 1)])
    said: list[str] = []
    results = experiment.run(
        tmp_path, ["tor"], ["kfp"], experiment.Settings(folds=4, kfp_trees=20), say=said.append
    )
    assert {r.sites for r in results} == {4} and sum(r.test for r in results) == 4 * 4
    assert any("left out 1 site" in line for line in said)


def test_the_report_runs_from_the_dataset_alone_with_its_growth_over_visits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    from bento.cli.main import main

    wf_rounds.write_traces(tmp_path, [replace(t, condition="tor") for t in synthetic(5, 6)])
    argv = ["eval", "wf", "report", str(tmp_path), "--attacks", "kfp", "--folds", "3", "--trees", "20"]
    assert main([*argv, "--growth", "3", "4", "6"]) == 0
    table = (tmp_path / "table1.md").read_text()
    assert table.startswith("6 rounds collected 2026-12-07: 30 visits (0 failed)")
    row = next(line for line in table.splitlines() if line.startswith("| plain Tor") and "k-FP" in line)
    assert row.count("%") == 3  # 3, 4 and all 6 visits a site
    assert "| 20.0% |" in table  # chance, 5 sites
    for png in ("table1.png", "growth.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in (tmp_path / "results" / "tor" / "kfp").iterdir()} >= {
        "first-3",
        "first-4",
        "fold-0.json",
    }
    assert "plain Tor" in capsys.readouterr().out


def test_a_defense_collected_in_later_rounds_only_is_reported_on_fewer_visits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old rounds of 4 conditions and new ones of 5 make one dataset: the fifth is attacked on
    the visits it has, and its cost is shown before it has enough for the folds."""
    pytest.importorskip("matplotlib")
    from bento.cli.main import main
    from bento.eval import dataset

    plain = [replace(t, condition="tor") for t in synthetic(5, 6)]
    timed = [replace(t, condition="browser-deadlines") for t in synthetic(5, 3, seed=1)]
    for number in range(6):  # rounds 0-2: plain Tor only; 3-5: the defense as well
        traces = [t for t in plain if t.visit == number]
        traces += [t for t in timed if number >= 3 and t.visit == number - 3]
        wf_rounds.write_round(tmp_path, number, traces)
    assert [r.conditions for r in dataset.read_manifest(tmp_path).rounds] == [["tor"]] * 3 + [
        ["browser-deadlines", "tor"]
    ] * 3
    figures = tmp_path / "figures"
    argv = [
        "eval",
        "wf",
        "report",
        str(tmp_path),
        "--attacks",
        "kfp",
        "--trees",
        "20",
        "--figures",
        str(figures),
    ]
    assert main([*argv, "--folds", "4"]) == 0  # 6 visits of plain Tor, 3 of the defense
    table = (tmp_path / "table1.md").read_text()
    assert "| plain Tor (browser-like client) | " in table.split("\n\n")[1]
    assert "delivered at" not in table.split("\n\n")[1]  # not attacked: 3 visits for 4 folds
    cost = next(line for line in table.splitlines() if line.startswith("| Browser, delivered at"))
    assert cost.endswith("| 15 |")  # its cost, on the 15 visits it has
    assert "too few visits for 4 folds" in capsys.readouterr().err
    assert main([*argv, "--folds", "3"]) == 0  # now both: the defense on its 3 visits a site
    attacked = (tmp_path / "table1.md").read_text().split("\n\n")[1]
    assert "| Browser, delivered at 5/10/20/40 s | " in attacked
    for png in ("table1.png", "cost.png"):
        assert (figures / png).read_bytes()[:4] == b"\x89PNG"
    # A report of what is on disk trains nothing: with 2 folds of 3 in, the cell says so.
    (tmp_path / "results" / "tor" / "kfp" / "fold-2.json").unlink()
    assert main([*argv, "--folds", "3", "--trained-only"]) == 0
    assert not (tmp_path / "results" / "tor" / "kfp" / "fold-2.json").exists()
    assert "[2 of 3 folds]" in (tmp_path / "table1.md").read_text()
    assert "fold 3 of 3 not trained yet" in capsys.readouterr().err
