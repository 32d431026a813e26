"""The testnet's nameserver, the box-side resolver, and the corpus they name (no tor needed)."""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.message
import dns.rcode
import httpx
import pytest

from bento.testnet.corpus import Corpus, Resource
from bento.testnet.corpus.content import render
from bento.testnet.corpus.serve import app
from bento.testnet.nameserver import Zone, respond, serve
from bento.tor.resolver import Resolver, read_resolv_conf

ZONE = {"www.s001.test": "127.20.0.6", "cdn.shared-cdn.test": "127.20.0.1"}


@pytest.fixture
async def nameserver(tmp_path: Path) -> AsyncIterator[str]:
    ready = tmp_path / "ready"
    task = asyncio.create_task(serve(Zone(ZONE), "127.0.0.1", 0, ready=ready))
    try:
        async with asyncio.timeout(10):
            while not ready.exists():  # noqa: ASYNC110 (a file written by the server is the signal)
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{ready.read_text()}"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_resolver_gets_corpus_names_and_nothing_else_from_the_nameserver(nameserver: str) -> None:
    resolver = Resolver.nameserver(nameserver)
    assert await resolver.resolve("www.s001.test") == ["127.20.0.6"]
    assert await resolver.resolve("WWW.S001.TEST.") == ["127.20.0.6"]
    for name in ("www.example.com", "nope.s001.test"):  # answered, not forwarded anywhere
        with pytest.raises(socket.gaierror, match="Name or service not known"):
            await resolver.resolve(name)
    assert await resolver.resolve("10.1.2.3") == ["10.1.2.3"]  # a literal asks nobody
    for spelling in ("127.1", "2130706433", "0x7f000001"):  # as getaddrinfo reads them
        assert await resolver.resolve(spelling) == ["127.0.0.1"]


async def test_a_resolver_without_an_answer_raises_rather_than_hangs() -> None:
    # A port nobody answers on: the lookup times out with a clear error.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver.nameserver(f"127.0.0.1:{silent.getsockname()[1]}")
        resolver._dns.lifetime = 0.5  # type: ignore[union-attr]
        with pytest.raises(OSError, match="name resolution failed"):
            await resolver.resolve("www.s001.test")


async def test_system_lookups_do_not_wait_behind_the_default_thread_pool() -> None:
    """The default pool's one thread is stuck (a slow tor control call, say): names still resolve."""
    loop = asyncio.get_running_loop()
    stuck, default = threading.Event(), ThreadPoolExecutor(1)
    loop.set_default_executor(default)
    default.submit(stuck.wait)
    try:
        async with asyncio.timeout(3):  # under the resolver's own 5 s
            assert await Resolver(None).resolve("localhost") in (["127.0.0.1"], ["127.0.0.1", "::1"])
    finally:
        stuck.set()


def test_the_nameserver_refuses_to_answer_responses_and_garbage() -> None:
    zone = Zone(ZONE)
    assert respond(zone, b"\x00\x01garbage") is None
    query = dns.message.make_query("www.s001.test", "A")
    response = dns.message.make_response(query)
    assert respond(zone, response.to_wire()) is None  # never answer an answer
    answer = dns.message.from_wire(respond(zone, query.to_wire()) or b"")
    assert answer.rcode() == dns.rcode.NOERROR and "127.20.0.6" in answer.to_text()
    aaaa = dns.message.from_wire(
        respond(zone, dns.message.make_query("www.s001.test", "AAAA").to_wire()) or b""
    )
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        Zone({"evil.test": "192.0.2.1"})


def test_resolv_conf_lines_are_read_as_libevent_reads_them(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# c\nnameserver 127.0.0.1:5353\nnameserver ::1\nnameserver bogus\nsearch x\n")
    assert read_resolv_conf(conf) == [("127.0.0.1", 5353), ("::1", 53)]
    assert read_resolv_conf(tmp_path / "missing") == []


def test_the_corpus_follows_its_bounds_and_is_the_same_from_the_same_seed() -> None:
    corpus = Corpus(seed=0, sites=100)
    sizes = [s.total_bytes for s in corpus.sites]
    counts = [len(s.resources) for s in corpus.sites]
    assert min(sizes) >= 50 * 1024 and max(sizes) <= 5.2 * 1024 * 1024
    assert min(counts) >= 5 and max(counts) <= 150
    assert 1_000_000 < statistics.median(sizes) < 3_000_000  # near the published median
    assert all(address.startswith("127.") for address in corpus.addresses.values())
    assert len(set(corpus.addresses.values())) == len(corpus.addresses)
    for site in corpus.sites:
        assert len({h for h in site.hosts if site.name in h}) >= 2  # several first-party names
    again = Corpus(seed=0, sites=100)
    site = corpus.sites[7]
    assert [(r.host, r.path, r.size) for r in site.resources] == [
        (r.host, r.path, r.size) for r in again.sites[7].resources
    ]
    assert render(corpus, site.page, 8080) == render(again, again.sites[7].page, 8080)
    assert [s.total_bytes for s in Corpus(seed=1, sites=100).sites] != sizes


async def test_every_resource_a_page_names_is_served_and_some_only_a_script_names() -> None:
    corpus = Corpus(seed=3, sites=20)
    transport = httpx.ASGITransport(app=app(corpus, 8080))
    kinds: set[str] = set()
    scripted = 0
    async with httpx.AsyncClient(transport=transport) as http:
        for site in corpus.sites[:5]:
            for resource in site.resources:
                response = await http.get(f"http://{resource.host}:8080{resource.path}")
                assert response.status_code == 200, resource
                assert abs(len(response.content) - resource.size) < max(2048, resource.size // 10)
                kinds.add(resource.kind)
                if resource.kind == "js" and resource.scripted:
                    scripted += 1
                    for hidden in resource.scripted:
                        assert hidden.path not in response.text  # assembled at run time
            assert _reachable(site.page) == {id(r) for r in site.resources}  # none orphaned
        assert (await http.get("http://www.s001.test:8080/nope")).status_code == 404
        assert (await http.get("http://elsewhere.test:8080/")).status_code == 404
    assert {"html", "css", "js", "image"} <= kinds and scripted
    css = next(r for s in corpus.sites for r in s.resources if r.kind == "css" and r.imports)
    assert b"@import url(" in render(corpus, css, 8080)
    assert render(corpus, corpus.sites[0].resources[-1], 8080)


def _reachable(resource: Resource) -> set[int]:
    """Every resource a browser loading ``resource`` would request."""
    seen = {id(resource)}
    for child in [*resource.links, *resource.imports, *resource.scripted]:
        seen |= _reachable(child)
    if resource.srcset is not None:
        seen.add(id(resource.srcset))
    return seen


class _Relay:
    """Stands in for a Stem controller: only the one option the resolver reads."""

    def __init__(self, resolv_conf: str | None) -> None:
        self.resolv_conf = resolv_conf

    def get_conf(self, name: str, default: object = None) -> str | None:
        assert name == "ServerDNSResolvConfFile"
        return self.resolv_conf


def test_a_box_resolves_as_its_relay_unless_told_otherwise(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1:5353\n")
    assert Resolver.like_relay(_Relay(str(conf))).nameservers == [("127.0.0.1", 5353)]  # type: ignore[arg-type]
    assert Resolver.like_relay(_Relay(None)).describe() == "the system resolver"  # type: ignore[arg-type]
    told = Resolver.configured("192.0.2.53", _Relay(str(conf)))  # type: ignore[arg-type]
    assert told.nameservers == [("192.0.2.53", 53)]


def test_the_server_setting_takes_a_nameserver_address_only() -> None:
    from bento.errors import BentoError
    from bento.server.config import ServerConfig

    assert ServerConfig.load(None, {"resolver": "127.0.0.1:5353"}).resolver == "127.0.0.1:5353"
    assert ServerConfig.load(None, {"resolver": "[::1]:53"}).resolver == "[::1]:53"
    with pytest.raises(BentoError, match="resolver"):
        ServerConfig.load(None, {"resolver": "dns.example.com"})


async def test_localhost_is_loopback_at_the_nameserver(nameserver: str) -> None:
    assert await Resolver.nameserver(nameserver).resolve("localhost") == ["127.0.0.1"]
