"""Which boxes hold a file's shards: N of them, kept apart from each other.

Boxes are taken in a random order, first each on a relay of its own that shares neither a
declared family nor a /16 (IPv4; /32 for IPv6, as Tor's EnforceDistinctSubnets does) with
one already chosen; then, where the consensus has too few such boxes, any other distinct
box (said in a warning); and only where there are fewer boxes than shards does a box hold
several shards, said loudly, with how many boxes the file can then lose.

>>> a = BoxInfo("a", "A" * 40, ("Running",), "a" * 56, "10.1.0.1:9001")
>>> b = BoxInfo("b", "B" * 40, ("Running",), "b" * 56, "10.1.0.2:9001")
>>> c = BoxInfo("c", "C" * 40, ("Running",), "c" * 56, "10.2.0.1:9001")
>>> chosen, warnings = place([a, b, c], 2)
>>> sorted(box.nickname for box in chosen) in (["a", "c"], ["b", "c"])
True
>>> warnings
[]
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

from bento.client.discovery import BoxInfo
from bento.errors import BentoError


def subnet(box: BoxInfo) -> str:
    host = box.address.rsplit(":", 1)[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 16 if address.version == 4 else 32
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def related(one: BoxInfo, other: BoxInfo) -> bool:
    """Whether either relay declares the other in its family (by fingerprint or nickname)."""

    def names(box: BoxInfo) -> set[str]:
        return {f"${box.fingerprint}".upper(), box.nickname.upper()}

    declared = {f.upper() for f in one.family}, {f.upper() for f in other.family}
    return bool(declared[0] & names(other) or declared[1] & names(one))


def place(boxes: list[BoxInfo], n: int, rng: random.Random | None = None) -> tuple[list[BoxInfo], list[str]]:
    """``n`` boxes for ``n`` shards (the i-th shard to the i-th), and warnings for people."""
    if not boxes:
        raise BentoError("there is no Bento box in the consensus to hold the shards", fix="run `bento boxes`")
    pool = list({box.fingerprint: box for box in boxes}.values())
    (rng or random.SystemRandom()).shuffle(pool)
    chosen: list[BoxInfo] = []
    for box in pool:
        apart = all(subnet(box) != subnet(c) and not related(box, c) for c in chosen)
        if apart and len(chosen) < n:
            chosen.append(box)
    warnings = []
    strict = len(chosen)
    for box in pool:
        if box not in chosen and len(chosen) < n:
            chosen.append(box)
    if len(chosen) > strict:
        warnings.append(
            f"only {strict} of the {len(chosen)} boxes are in distinct /16s and families: "
            "one operator or network may hold several shards"
        )
    distinct = len(chosen)
    while len(chosen) < n:
        chosen.append(chosen[len(chosen) % distinct])
    if distinct < n:
        warnings.append(
            f"SEVERAL SHARDS PER BOX: only {distinct} box(es) for {n} shards; "
            "a box that fails takes all of its shards with it"
        )
    return chosen, warnings


def tolerated(placement: list[str], k: int) -> int:
    """How many boxes (named by ``placement``, one entry per shard) may all be lost, whichever
    they are, with the file still recoverable from ``k`` shards."""
    held = sorted(Counter(placement).values(), reverse=True)
    spare, lost = len(placement) - k, 0
    for count in held:
        if count > spare:
            break
        spare -= count
        lost += 1
    return lost
