"""The consensus as a function sees it: relays, their flags, and where their exits go.

A :class:`Directory` is a snapshot taken from a tor controller (the consensus for
flags and bandwidth, the relays' full descriptors for exit policies), and answers the
questions functions ask: which relays are there, does this exit allow that address
and port, and which path of a given length satisfies some constraints.

>>> flags = ("Exit", "Fast", "Guard", "Running", "Valid")
>>> d = Directory([Relay("A" * 40, "alpha", flags, 100, "10.0.0.1", 9001)], {})
>>> d.get("$" + "a" * 40).nickname
'alpha'
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import stem
import stem.exit_policy

from bento.errors import BentoError
from bento.tor import advert

_FINGERPRINT = re.compile(r"^\$?[0-9A-Fa-f]{40}$")
MAX_PATH = 8


@dataclass(frozen=True)
class Relay:
    fingerprint: str
    nickname: str
    flags: tuple[str, ...]
    bandwidth: int
    address: str
    or_port: int

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "flags": list(self.flags)}


class Directory:
    """One snapshot of the relays a tor knows, with their exit policies."""

    def __init__(
        self,
        relays: Iterable[Relay],
        policies: dict[str, stem.exit_policy.ExitPolicy],
        boxes: dict[str, str] | None = None,
    ) -> None:
        self.relays = {r.fingerprint: r for r in relays}
        self._policies = policies
        self.boxes = boxes or {}  # fingerprint -> the Bento onion its relay advertises

    @classmethod
    def read(cls, controller: Any) -> Directory:
        """Read the consensus and descriptors from a Stem controller (blocking)."""
        try:
            statuses = list(controller.get_network_statuses())
        except stem.ControllerError as exc:
            raise BentoError(f"the functions' tor has no consensus yet ({exc})") from None
        policies, boxes = {}, {}
        with contextlib.suppress(stem.ControllerError):
            for desc in controller.get_server_descriptors():
                policies[desc.fingerprint] = desc.exit_policy
                contact = desc.contact.decode(errors="replace") if desc.contact else None
                if onion := advert.onion_in(contact):
                    boxes[desc.fingerprint] = onion
        relays = [
            Relay(
                fingerprint=s.fingerprint,
                nickname=s.nickname,
                flags=tuple(sorted(s.flags)),
                bandwidth=int(s.bandwidth or 0),
                address=s.address,
                or_port=int(s.or_port),
            )
            for s in statuses
        ]
        return cls(relays, policies, boxes)

    def bento_boxes(self) -> list[dict[str, Any]]:
        """Running relays that advertise a Bento box, as ``bento.client.BoxInfo`` fields."""
        found = []
        for fingerprint, onion in self.boxes.items():
            relay = self.relays.get(fingerprint)
            if relay is not None and "Running" in relay.flags:
                found.append(
                    {
                        "nickname": relay.nickname,
                        "fingerprint": relay.fingerprint,
                        "flags": list(relay.flags),
                        "onion": onion,
                        "address": f"{relay.address}:{relay.or_port}",
                    }
                )
        return sorted(found, key=lambda b: b["nickname"])

    def get(self, name: str) -> Relay:
        """The relay with this fingerprint (``$`` optional); BentoError if there is none."""
        if not isinstance(name, str) or not _FINGERPRINT.match(name):
            raise BentoError(f"{str(name)[:60]!r} is not a relay fingerprint (40 hex digits)")
        relay = self.relays.get(name.removeprefix("$").upper())
        if relay is None:
            raise BentoError(f"no relay {name} in the consensus")
        if "Running" not in relay.flags:
            raise BentoError(f"relay {name} ({relay.nickname}) is not running")
        return relay

    def exit_allows(self, fingerprint: str, host: str, port: int) -> bool:
        """Whether the relay's exit policy accepts ``host:port`` (a name: any address on the port)."""
        relay = self.get(fingerprint)
        policy = self._policies.get(relay.fingerprint)
        if policy is None or "BadExit" in relay.flags:
            return False
        try:
            return bool(policy.can_exit_to(host, port))
        except ValueError:  # a host name: tor resolves it at the exit
            return bool(policy.can_exit_to(port=port, strict=False))

    def select(
        self,
        *,
        flags: Iterable[str] = (),
        exit_to: tuple[str, int] | None = None,
    ) -> list[Relay]:
        """Running relays carrying every one of ``flags`` (and allowing ``exit_to``)."""
        wanted = set(flags) | {"Running"}
        found = [r for r in self.relays.values() if wanted <= set(r.flags)]
        if exit_to is not None:
            found = [r for r in found if self.exit_allows(r.fingerprint, *exit_to)]
        return sorted(found, key=lambda r: r.nickname)

    def path(
        self,
        length: int,
        *,
        exit_to: tuple[str, int] | None = None,
        exclude: Iterable[str] = (),
        rng: random.Random | None = None,
    ) -> list[Relay]:
        """``length`` distinct running relays, picked by bandwidth: a Guard first where
        one is free, and last an exit that allows ``exit_to`` if given."""
        if not 1 <= length <= MAX_PATH:
            raise BentoError(f"a circuit has 1 to {MAX_PATH} hops, not {length}")
        rng = rng or random.SystemRandom()
        excluded = {self.get(name).fingerprint for name in exclude}
        pool = [r for r in self.select(flags=("Valid",)) if r.fingerprint not in excluded]
        chosen: list[Relay] = []
        if exit_to is not None:
            exits = [r for r in pool if self.exit_allows(r.fingerprint, *exit_to)]
            if not exits:
                raise BentoError(f"no running relay's exit policy allows {exit_to[0]}:{exit_to[1]}")
            chosen.append(_weighted(exits, rng))
        while len(chosen) < length:
            free = [r for r in pool if r not in chosen]
            guards = [r for r in free if "Guard" in r.flags]
            first = len(chosen) == length - 1  # chosen so far are the later hops
            candidates = guards if first and guards else free
            if not candidates:
                raise BentoError(f"the consensus has too few relays for a {length}-hop circuit")
            chosen.append(_weighted(candidates, rng))
        return list(reversed(chosen))  # picked from the last hop to the first


def _weighted(relays: list[Relay], rng: random.Random) -> Relay:
    weights = [max(1, r.bandwidth) for r in relays]
    return rng.choices(relays, weights=weights)[0]
