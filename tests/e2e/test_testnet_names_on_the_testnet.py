"""Names on the testnet: corpus sites by name through an exit, nothing resolved off the machine."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import run

from bento.client.box import Box
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs
from bento.testnet import Testnet
from bento.testnet.corpus.content import render
from bento.testnet.trace import fetch_via_socks
from bento.tor.resolver import Resolver

pytestmark = pytest.mark.testnet


async def test_a_corpus_site_loads_by_name_through_an_exit(testnet: Testnet) -> None:
    corpus, port = testnet.corpus, testnet.corpus_port
    assert corpus is not None and port is not None
    site = corpus.sites[4]
    assert len({r.host for r in site.resources}) >= 3  # first and third parties, all by name
    for resource in site.resources[:12]:
        body = await fetch_via_socks(testnet.socks_address, f"http://{resource.host}:{port}{resource.path}")
        assert body == render(corpus, resource, port), resource.path


async def test_a_public_name_is_not_resolved_at_the_exit_nor_by_the_nameserver(testnet: Testnet) -> None:
    with pytest.raises(httpx.ProxyError):  # tor's SOCKS: host unreachable (the exit's NXDOMAIN)
        await fetch_via_socks(testnet.socks_address, "http://www.torproject.org/")
    assert testnet.nameserver is not None
    resolver = Resolver.nameserver(testnet.nameserver)
    with pytest.raises(socket.gaierror):
        await resolver.resolve("www.torproject.org")
    assert testnet.corpus is not None
    assert await resolver.resolve("www.s001.test") == [testnet.corpus.addresses["www.s001.test"]]


class Capture:
    """tshark on every interface but loopback, from creation until ``stop``."""

    def __init__(self, pcap: Path) -> None:
        # Every interface that is up (tshark refuses one that is down: it carries nothing).
        self.interfaces = sorted(
            p.name
            for p in Path("/sys/class/net").iterdir()
            if p.name != "lo" and int((p / "flags").read_text(), 16) & 0x1
        )
        assert self.interfaces, "no interface but loopback: nothing to watch"
        self.pcap = pcap
        argv = ["tshark", "-q", "-w", str(pcap)]
        for name in self.interfaces:
            argv += ["-i", name]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        said = ""
        for line in self.proc.stderr:  # tshark names the interfaces once it captures on them
            said += line
            if "Capturing on" in line:
                break
        missing = [name for name in self.interfaces if f"'{name}'" not in said]
        assert not missing, f"tshark does not capture on {missing}: {said}"

    def stop(self) -> bytes:
        """Stop capturing; every packet seen, as a pcap file's bytes."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return self.pcap.read_bytes()


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[Capture]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (scripts/bootstrap.sh installs it)")
    running = Capture(tmp_path / "outside.pcapng")
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


RESOLVE = """
from bento.runtime import api

def resolve(names):
    out = {}
    for name in names:
        try:
            out[name] = api.resolve(name)
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    return out
"""


async def test_nothing_leaves_the_machine_while_names_are_used(
    testnet: Testnet, box: Box, capture: Capture
) -> None:
    """Names resolved at an exit, by the nameserver and by a box's broker: none leave loopback.

    The machine may be shared, so the capture is searched for this run's own marks: a
    fresh name under a public domain, and the corpus's names, in any packet at all.
    """
    token = secrets.token_hex(8)
    public = f"leak-{token}.example.com"
    corpus, port = testnet.corpus, testnet.corpus_port
    assert corpus is not None and port is not None and testnet.nameserver is not None
    await fetch_via_socks(testnet.socks_address, corpus.sites[0].url(port))
    with pytest.raises(httpx.ProxyError):
        await fetch_via_socks(testnet.socks_address, f"http://{public}/")
    with pytest.raises(socket.gaierror):
        await Resolver.nameserver(testnet.nameserver).resolve(f"x.{public}")
    # A function on a box asks its broker, which asks as the box is configured.
    deployment = await box.deploy(RESOLVE.encode(), Manifest(name="resolve", needs=Needs(network=True)))
    try:
        _, ended = await run(box, deployment, "resolve", ["img.s001.test", f"y.{public}"])
    finally:
        await box.shutdown(deployment)
    assert ended.state is SessionState.COMPLETED, ended.reason
    assert ended.result["img.s001.test"] == [corpus.addresses["img.s001.test"]]
    assert "Name or service not known" in ended.result[f"y.{public}"]
    data = capture.stop()
    assert data.startswith(b"\x0a\x0d\x0d\x0a"), "not a pcapng file"
    # In DNS and in HTTP alike the token appears as is; a corpus name in DNS as labels.
    for mark in (token.encode(), b"\x04s001\x04test", b"s001.test"):
        assert mark not in data, f"a packet outside loopback carried {mark!r}"
