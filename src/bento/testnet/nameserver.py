"""The testnet's DNS resolver: answers for the test corpus's names, refuses the rest.

Testnet exits (tor's ``ServerDNSResolvConfFile``) and Bento boxes (their broker's
``resolver`` setting) resolve through it, so a name looked up on the testnet never
reaches the host's resolver or leaves the machine. Names of the zone answer with their
loopback address (A; AAAA and other types get an empty answer) and every other name
gets NXDOMAIN: this server knows the test corpus only and recurses for nobody. (Not
REFUSED: libevent's evdns, inside tor, takes a REFUSED as a failing nameserver, marks it
down and reissues the query, which would make the exits' DNS look broken.)

It listens on UDP (what tor's eventdns and the broker's resolver speak) on a port picked
at start-up: libevent's resolv.conf parser takes ``nameserver 127.0.0.1:PORT``, so no
privileged port 53 is needed. Run as ``python -m bento.testnet.nameserver ZONE.json HOST:PORT READY_FILE``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from pathlib import Path
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from bento.tor.process import serve_until_signalled

TTL = 60


class Zone:
    """Names and their IPv4 addresses, all on loopback; parsed from hostile-free JSON we wrote."""

    def __init__(self, names: dict[str, str]) -> None:
        self.addresses: dict[dns.name.Name, str] = {}
        # RFC 6761: localhost is loopback, wherever it is asked.
        for host, address in {"localhost": "127.0.0.1", **names}.items():
            if not ipaddress.IPv4Address(address).is_loopback:
                raise ValueError(f"{host} -> {address}: the testnet's names must stay on 127.0.0.0/8")
            self.addresses[dns.name.from_text(host).canonicalize()] = address

    @classmethod
    def load(cls, path: Path) -> Zone:
        names = json.loads(path.read_text())
        if not isinstance(names, dict):
            raise ValueError(f"{path}: a zone is a JSON object of name -> address")
        return cls({str(k): str(v) for k, v in names.items()})

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The response to one parsed query."""
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA  # no recursion here, for anyone
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        address = self.addresses.get(question.name.canonicalize())
        if question.rdclass != dns.rdataclass.IN or address is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        response.flags |= dns.flags.AA
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            response.answer.append(dns.rrset.from_text(question.name, TTL, "IN", "A", address))
        return response  # other types of a known name: NOERROR, no data


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's UDP transports do not derive from DatagramTransport, but are one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = respond(self.zone, data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def respond(zone: Zone, data: bytes) -> bytes | None:
    """The wire-format answer to a wire-format query; None for what cannot be answered at all."""
    try:
        query = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return None  # not even a header to answer to
    if query.flags & dns.flags.QR:
        return None  # a response, not a query: never answer one (no reflection loops)
    return zone.answer(query).to_wire(max_size=512)


async def serve(zone: Zone, host: str, port: int, *, ready: Path | None = None) -> None:
    """Answer queries on ``host:port`` (UDP) until cancelled; writes the bound port to ``ready``."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(zone), local_addr=(host, port))
    try:
        if ready is not None:
            bound = transport.get_extra_info("sockname")[1]
            tmp = ready.with_suffix(".tmp")
            tmp.write_text(str(bound))
            tmp.replace(ready)
        await asyncio.Event().wait()
    finally:
        transport.close()


def main(argv: list[str]) -> int:
    zone_file, address, ready = Path(argv[0]), argv[1], Path(argv[2])
    host, _, port = address.rpartition(":")
    zone = Zone.load(zone_file)

    serve_until_signalled(serve(zone, host, int(port), ready=ready))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
