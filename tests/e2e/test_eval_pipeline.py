"""The fingerprinting evaluation end to end on the testnet, in its quick mode.

Real captures of the victim's link (dumpcap), real page loads through Tor and through
Browser, then k-FP and Deep Fingerprinting on what was captured. It asserts that the
pipeline works and that plain Tor is identifiable, not the paper's numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bento.eval import collect, experiment, report, traces
from bento.testnet import Testnet

pytestmark = pytest.mark.testnet
pytest.importorskip("torch")
pytest.importorskip("sklearn")

SITES, VISITS = 4, 4


@pytest.fixture(scope="module")
async def dataset(testnet: Testnet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:  # dumpcap needs root or its capabilities
        pytest.skip("capturing on lo needs root (or dumpcap's capabilities)")
    where = tmp_path_factory.mktemp("wf")
    # Two victims at once, as the full run uses: each capture must hold its own link only.
    outcome = await collect.collect(testnet, where, ["tor", "browser-0mb"], SITES, VISITS, parallel=2)
    assert outcome.failed == []
    assert outcome.counts == {"tor": SITES * VISITS, "browser-0mb": SITES * VISITS}
    return where


async def test_collection_records_the_victims_link_and_resumes(testnet: Testnet, dataset: Path) -> None:
    plain = traces.load(dataset, "tor")
    browsed = traces.load(dataset, "browser-0mb")
    assert sorted((t.site, t.visit) for t in plain) == [(s, v) for s in range(SITES) for v in range(VISITS)]
    for trace in plain + browsed:
        assert len(trace) > 10 and {1, -1} <= set(trace.directions)
        assert list(trace.times) == sorted(trace.times)
    # Browser moves the page in one long download: far fewer cells go up than with plain Tor.
    up = lambda ts: sum(d > 0 for t in ts for d in t.directions)  # noqa: E731
    assert up(browsed) < up(plain)
    missing: list[int] = []
    again = await collect.collect(testnet, dataset, ["tor"], SITES, VISITS, planned=missing.append)
    assert missing == [0], "nothing is missing, so nothing is visited again"
    assert again.counts == {"tor": SITES * VISITS} and len(traces.load(dataset, "tor")) == SITES * VISITS


async def test_plain_tor_is_identifiable_and_the_report_is_made(dataset: Path) -> None:
    settings = experiment.Settings(folds=3, df_epochs=3, df_length=traces.DF_LENGTH, kfp_trees=100)
    results = experiment.run(dataset, ["tor", "browser-0mb"], ["kfp", "df"], settings)
    assert len(results) == 2 * 2 * 3
    kfp_tor = [r.accuracy for r in results if r.condition == "tor" and r.attack == "kfp"]
    assert sum(kfp_tor) / len(kfp_tor) > 1 / SITES  # better than chance on plain Tor
    text = report.markdown(results, dataset)
    assert "plain Tor" in text and "93.9%" in text
    png = report.plot(results, dataset / "table1.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Results are checkpoints: a second run trains nothing and returns the same figures.
    assert experiment.run(dataset, ["tor", "browser-0mb"], ["kfp", "df"], settings) == results
