"""Browser on the testnet's corpus: a synthetic site by name, first and third parties."""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium import open_offline
from support import TIMEOUT

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.functions.browser import client as browser
from bento.testnet import Testnet
from bento.testnet.corpus import Resource
from bento.testnet.corpus.model import url as corpus_url

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]


def _static(page: Resource) -> list[Resource]:
    """What markup and style sheets name, from ``page`` down (script-made requests are not)."""
    found, todo = [], [page]
    while todo:
        resource = todo.pop()
        found.append(resource)
        todo += [*resource.links, *resource.imports, *([resource.srcset] if resource.srcset else [])]
    return found


async def test_a_corpus_site_is_fetched_whole_and_opens_offline(testnet: Testnet, tmp_path: Path) -> None:
    corpus, port = testnet.corpus, testnet.corpus_port
    assert corpus is not None and port is not None
    site = min(corpus.sites[:20], key=lambda s: s.total_bytes)  # a small one: the test stays quick
    async with Box(testnet.state.boxes[0].bento_onion or "", socks=testnet.socks_address) as box:
        page = await browser.browse(
            box, Keyring(tmp_path / "keyring.json"), site.url(port), tmp_path / "page"
        )
    static = {corpus_url(r, port) for r in _static(site.page)}
    fetched = {r["url"] for r in page.resources if not r["error"]}
    assert not page.failed, page.failed
    assert fetched | {site.url(port)} == static  # every resource the markup names, nothing else
    assert len({r.host for r in _static(site.page)}) >= 3  # first and third parties, by name
    requests, leaks, _, state = await open_offline(page.main)
    assert not leaks, leaks  # the copy runs no script: nothing asks the web
    assert all(url.startswith("file://") for url in requests)
    assert all(width > 0 for _, width in state["images"]), state["images"]


@pytest.mark.parametrize("which", [0, -1], ids=["box-as-root", "box-as-dedicated-user"])
async def test_the_chromium_engine_also_keeps_what_only_scripts_request(
    testnet: Testnet, tmp_path: Path, which: int
) -> None:
    corpus, port = testnet.corpus, testnet.corpus_port
    assert corpus is not None and port is not None
    with_scripts = [s for s in corpus.sites[:20] if any(r.scripted for r in s.resources)]
    site = min(with_scripts, key=lambda s: s.total_bytes)
    async with Box(testnet.state.boxes[which].bento_onion or "", socks=testnet.socks_address) as box:
        descriptor = await box.descriptor()
        assert "chromium" in descriptor.policy.syscall_profiles, "testnet boxes offer it where chromium is"
        page = await browser.browse(
            box, Keyring(tmp_path / "keyring.json"), site.url(port), tmp_path / "page",
            browser.Options(engine="chromium"),
        )  # fmt: skip
    static = {corpus_url(r, port) for r in _static(site.page)}
    scripted = {corpus_url(s, port) for r in site.resources for s in r.scripted}
    fetched = {r["url"] for r in page.resources if not r["error"]} | {site.url(port)}
    assert page.index["engine"] == "chromium" and not page.failed, page.failed
    assert scripted and scripted <= fetched, scripted - fetched  # what the static engine cannot see
    assert static <= fetched, static - fetched  # and all it does see
    assert page.usage is not None and page.usage.peak_memory_bytes < 1024 << 20  # the manifest's limit
    requests, leaks, _, state = await open_offline(page.main)
    assert not leaks, leaks  # its scripts are gone (the page is what they built): nothing asks the web
    assert all(url.startswith("file://") for url in requests)
    assert all(width > 0 for _, width in state["images"]), state["images"]
