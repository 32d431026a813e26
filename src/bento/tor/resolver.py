"""Name resolution for a Bento box's functions (the broker's ``resolve``), as the relay does it.

An exit relay resolves its clients' names through the nameservers of its
``ServerDNSResolvConfFile`` (the system's /etc/resolv.conf when that is unset). A function
on the box should see the same answers as a Tor user exiting there, so by default the
box follows the relay: ``Resolver.like_relay`` reads the relay's setting and asks the
nameservers it names, or the system resolver when it names none. A box can also be given
a nameserver explicitly (its ``resolver`` setting), which is how a testnet box resolves
through the testnet's own nameserver and never through the host's.

The example needs a nameserver (the testnet's; tests/unit/test_testnet_names.py runs it):

>>> resolver = Resolver.nameserver("127.0.0.1:5353")
>>> asyncio.run(resolver.resolve("www.s001.test"))  # doctest: +SKIP
['127.1.0.1']
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import socket
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver
import stem
import stem.control

from bento.errors import BentoError
from bento.tor.control import parse_address

TIMEOUT = 5.0  # seconds for a whole lookup, every nameserver and retry included
LOOKUP_THREADS = 8
# getaddrinfo blocks, and a slow name keeps its thread past our timeout: system lookups run
# in a bounded pool of their own, so slow names queue behind each other, never in front of
# the default pool's tor control calls and storage reads.
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="bento-lookup")


class ResolveError(OSError):
    """The name could not be looked up (as opposed to: it does not exist)."""


class Resolver:
    """``await resolver.resolve(host)``: the host's addresses, sorted."""

    def __init__(self, nameservers: list[tuple[str, int]] | None = None) -> None:
        # None: the system's resolver (getaddrinfo), as a relay without its own resolv.conf.
        self._dns: dns.asyncresolver.Resolver | None = None
        self.nameservers = nameservers
        if nameservers:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [host for host, _ in nameservers]
            # dnspython has one port for all nameservers; the first one's is used.
            self._dns.port = nameservers[0][1]
            self._dns.lifetime = TIMEOUT

    @classmethod
    def nameserver(cls, address: str) -> Resolver:
        """Ask only the nameserver at ``host[:port]`` (port 53 by default)."""
        return cls([parse_nameserver(address)])

    @classmethod
    def configured(cls, nameserver: str | None, ctl: stem.control.Controller) -> Resolver:
        """The box's ``resolver`` setting if given, else as the relay behind ``ctl`` (blocking)."""
        return cls.nameserver(nameserver) if nameserver else cls.like_relay(ctl)

    @classmethod
    def like_relay(cls, ctl: stem.control.Controller) -> Resolver:
        """Resolve as the relay behind ``ctl`` does: its ServerDNSResolvConfFile, else the system.

        Blocking (a control-port query): call it off the event loop."""
        try:
            conf = ctl.get_conf("ServerDNSResolvConfFile", None)
        except (stem.ControllerError, stem.SocketError):
            conf = None
        if not conf:
            return cls(None)
        return cls(read_resolv_conf(Path(conf)) or None)

    def describe(self) -> str:
        if not self.nameservers:
            return "the system resolver"
        return ", ".join(f"{host}:{port}" for host, port in self.nameservers)

    async def resolve(self, host: str) -> list[str]:
        """The IPv4 and IPv6 addresses of ``host`` (an address literal is its own answer).

        Fails as getaddrinfo does, so that callers see one behaviour whichever resolver
        the box uses: ``socket.gaierror`` (EAI_NONAME, "Name or service not known") for a
        name that does not exist, another OSError when no answer came.
        """
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]
        with contextlib.suppress(OSError):
            # The legacy IPv4 spellings getaddrinfo also takes: 127.1, 2130706433, 0x7f000001.
            return [socket.inet_ntoa(socket.inet_aton(host))]
        if self._dns is None:
            try:
                async with asyncio.timeout(TIMEOUT):
                    lookup = functools.partial(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
                    infos = await asyncio.get_running_loop().run_in_executor(_LOOKUPS, lookup)
            except TimeoutError:
                raise ResolveError(f"{host}: no answer within {TIMEOUT:.0f} s") from None
            return sorted({str(info[4][0]) for info in infos})
        found: set[str] = set()
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = await self._dns.resolve(host, rdtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise ResolveError(f"{host}: name resolution failed ({exc})") from None
            found |= {rdata.to_text() for rdata in answer}
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return sorted(found)


def read_resolv_conf(path: Path) -> list[tuple[str, int]]:
    """The ``nameserver`` lines of a resolv.conf, each ``IP`` or ``IP:PORT`` as libevent reads them."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append(parse_nameserver(words[1]))
            except ValueError:
                continue  # libevent skips what it cannot parse, and so do we
    return found


def parse_nameserver(address: str) -> tuple[str, int]:
    """``IP`` or ``IP:PORT`` (``[V6]:PORT``); ValueError otherwise."""
    try:
        return str(ipaddress.ip_address(address)), 53
    except ValueError:
        pass
    try:
        host, port = parse_address(address)
    except BentoError:
        raise ValueError(f"{address!r} is not a nameserver address (IP or IP:PORT)") from None
    if not 0 < port < 65536:
        raise ValueError(f"{address!r}: port out of range")
    return str(ipaddress.ip_address(host)), port
