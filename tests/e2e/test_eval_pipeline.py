"""The fingerprinting evaluation end to end on the testnet, in its quick mode.

Real captures of the victims' links (dumpcap), real page loads through Tor and through
Browser, written as whole rounds to a dataset, then k-FP and Deep Fingerprinting on what
was captured. It asserts that the pipeline works and that plain Tor is identifiable, not
the paper's numbers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bento.eval import dataset, experiment, report, rounds, traces
from bento.testnet import Role, Testnet

pytestmark = pytest.mark.testnet
pytest.importorskip("torch")
pytest.importorskip("sklearn")

SITES, ROUNDS = 4, 3  # three visits a site: the fewest that strict folds (k = 3) can split
CONDITIONS = ["tor", "browser-0mb"]


@pytest.fixture(scope="module")
async def data(testnet: Testnet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:  # dumpcap needs root or its capabilities
        pytest.skip("capturing on lo needs root (or dumpcap's capabilities)")
    where, work = tmp_path_factory.mktemp("wf"), tmp_path_factory.mktemp("victims")
    # Two victims at once, as the full run uses: each capture must hold its own link only.
    outcome = await rounds.collect(
        testnet,
        where,
        CONDITIONS,
        SITES,
        work=work,
        options=rounds.options_of(testnet),
        visits=ROUNDS,
        parallel=2,
    )
    assert [r.number for r in outcome.rounds] == list(range(ROUNDS))
    assert "holds 3 rounds" in outcome.stopped
    return where


async def test_collection_writes_whole_rounds_of_the_victims_link(testnet: Testnet, data: Path) -> None:
    manifest = dataset.read_manifest(data)
    for entry in manifest.rounds:
        assert entry.missing == [] and entry.visits == SITES * len(CONDITIONS)
        assert (
            entry.testnet.relays == len(testnet.relays()) - len(testnet.state.by_role(Role.AUTHORITY))
            and entry.machine.cpus == os.cpu_count()
        )
        assert (data / entry.file).stat().st_size < 200_000  # compact: a few KB a visit
    plain, browsed = dataset.load(data, "tor"), dataset.load(data, "browser-0mb")
    expected = [(s, v) for s in range(SITES) for v in range(ROUNDS)]
    assert sorted((t.site, t.visit) for t in plain) == expected
    assert sorted((t.site, t.visit) for t in browsed) == expected
    for trace in plain + browsed:
        assert len(trace) > 10 and {1, -1} <= set(trace.directions.tolist())
        assert list(trace.times) == sorted(trace.times)
    # Browser moves the page in one long download: far fewer cells go up than with plain Tor.
    up = lambda ts: sum(int((t.directions > 0).sum()) for t in ts)  # noqa: E731
    assert up(browsed) < up(plain)
    # Nothing of the victims (their tors, captures, the keyring's tokens) is in the dataset.
    assert {p.name for p in data.iterdir()} == {"manifest.json", "rounds"}


async def test_no_round_is_started_that_the_deadline_would_cut(
    testnet: Testnet, data: Path, tmp_path: Path
) -> None:
    before = (data / "manifest.json").read_bytes()
    soon = time.time() + 5  # the rounds so far took longer than that
    outcome = await rounds.collect(
        testnet, data, CONDITIONS, SITES, work=tmp_path, options=rounds.options_of(testnet), deadline=soon
    )
    assert outcome.rounds == [] and "min left" in outcome.stopped
    assert (data / "manifest.json").read_bytes() == before


async def test_plain_tor_is_identifiable_and_the_report_is_made(data: Path) -> None:
    settings = experiment.Settings(folds=3, df_epochs=3, df_length=traces.DF_LENGTH, kfp_trees=100)
    results = experiment.run(data, CONDITIONS, ["kfp", "df"], settings)
    assert len(results) == 2 * 2 * 3
    kfp_tor = report.summarise(results)[("tor", "kfp")]
    assert kfp_tor.total == SITES * ROUNDS and kfp_tor.mean > 1 / SITES  # better than chance
    text = report.markdown(results, data)
    assert "plain Tor" in text and "93.9%" in text
    png = report.plot(results, data / "table1.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Results are checkpoints: a second run trains nothing and returns the same figures.
    assert experiment.run(data, CONDITIONS, ["kfp", "df"], settings) == results
