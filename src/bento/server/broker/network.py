"""The network operations: resolve a name, connect to a host, listen on the box's loopback.

A connection goes only to an address that was checked: the name is resolved once, every
answer is normalised and checked (own services, exit policy) before any connection is
tried, and the connection is made to those very addresses. A name whose answer changes
between a check and a connection (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import ipaddress
import socket
from typing import Annotated, Literal

from pydantic import Field

from bento.server.broker.gate import Denied, IPAddress, normalise
from bento.server.broker.operations import Context, Granted, Request

RESOLVE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 30.0
LISTEN_BACKLOG = 64

# A host name or address literal: no control characters or spaces, as DNS allows.
Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\x00-\x20\x7f]+$")]


class Resolve(Request):
    op: Literal["resolve"]
    host: Host


class Connect(Request):
    op: Literal["connect"]
    host: Host
    port: int = Field(ge=1, le=65535)


class Listen(Request):
    op: Literal["listen"]
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port")


# getaddrinfo blocks, and a slow name holds its thread past our timeout: names resolve in
# a pool of their own, so functions that look up slow names never starve the default pool
# (uploads, clean-up) that every other session needs.
# Each function has at most network.max_lookups of its threads (4 by default).
_RESOLVING = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="bento-resolve")


async def system_resolver(host: str) -> list[str]:
    """The host's resolver (getaddrinfo, in a thread pool of its own), bounded in time."""
    lookup = functools.partial(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().run_in_executor(_RESOLVING, lookup)
    except TimeoutError:
        raise TimeoutError(errno.ETIMEDOUT, f"resolving {host} took over {RESOLVE_TIMEOUT:.0f} s") from None
    return [str(info[4][0]) for info in infos]


async def _addresses(context: Context, host: str) -> list[IPAddress]:
    """``host``'s addresses, normalised and without duplicates, in the resolver's order."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return [normalise(host)]  # a literal needs no resolver
    found: list[IPAddress] = []
    # A name held by a slow resolver holds one of the function's units: past its budget its
    # lookups wait on each other (a page's 16 fetches), never on a neighbour's.
    async with context.ledger.queue("lookups", RESOLVE_TIMEOUT):
        answers = await context.resolver(host)
    for text in answers:
        address = normalise(text)
        if address not in found:
            found.append(address)
    if not found:
        raise OSError(f"{host} did not resolve")
    return found


async def resolve(context: Context, request: Resolve) -> Granted:
    context.require_network()
    addresses = await _addresses(context, request.host)
    return Granted({"addresses": [str(a) for a in addresses]})


async def connect(context: Context, request: Connect) -> Granted:
    context.require_network()
    addresses = await _addresses(context, request.host)
    for address in addresses:
        # Every address, before any connection.
        context.gate.check(address, request.port, private=context.policy.network.private_destinations)
    last: OSError = OSError(f"{request.host} did not resolve")
    loop = asyncio.get_running_loop()
    for address in addresses:  # the checked addresses themselves: no second lookup
        sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (str(address), request.port))
        except TimeoutError:
            sock.close()
            last = TimeoutError(
                errno.ETIMEDOUT, f"connecting to {address}:{request.port} took over {CONNECT_TIMEOUT:.0f} s"
            )
            continue
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return Granted({"peer": [str(address), request.port]}, sock)
    raise last


async def listen(context: Context, request: Listen) -> Granted:
    if not (context.needs.listen and context.policy.network.listen):
        raise Denied("listening is not in this function's manifest (needs.listen)")
    if request.port and request.port not in context.policy.network.listen_ports:
        # A port the function names could be one a host client expects some service on
        # (9050, tor's SOCKS port): only those the operator lists; otherwise the kernel picks.
        raise Denied(
            f"port {request.port} is not one this box lets functions listen on "
            "(listen on port 0 for an ephemeral port; the operator lists others in network.listen_ports)"
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", request.port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    if context.tor is not None:
        try:
            context.tor.listening(sock)  # an onion service of the function's may lead to it
        except BaseException:
            sock.close()
            raise
    return Granted({"address": list(sock.getsockname()[:2])}, sock)
