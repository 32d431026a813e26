"""Finding Bento boxes in the directory every Tor client already has.

A box is a relay whose published descriptor carries ``bento=<onion>`` in ContactInfo.
The client's own tor has the consensus and the relays' descriptors; we ask it through
its control port, so finding boxes sends nothing anywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import stem

from bento.errors import BentoError
from bento.tor import advert, control


@dataclass(frozen=True)
class BoxInfo:
    nickname: str
    fingerprint: str
    flags: tuple[str, ...]
    onion: str
    address: str
    family: tuple[str, ...] = ()  # the relay's declared family ($fingerprint or nickname)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "flags": list(self.flags)}


def discover(control_address: str) -> list[BoxInfo]:
    """Every running relay in the consensus that advertises a Bento box."""
    with control.connect(control_address) as ctl:
        try:
            statuses = {s.fingerprint: s for s in ctl.get_network_statuses()}
            descriptors = list(ctl.get_server_descriptors())
        except stem.ControllerError as exc:
            raise BentoError(
                f"the tor at {control_address} has no directory information yet ({exc})",
                fix="wait until tor has bootstrapped",
            ) from None
    if statuses and not descriptors:
        raise BentoError(
            "the tor client has no relay descriptors, so it cannot see ContactInfo",
            fix="add `UseMicrodescriptors 0` (or `FetchUselessDescriptors 1`) to the client's torrc",
        )
    boxes = []
    for desc in descriptors:
        status = statuses.get(desc.fingerprint)
        contact = desc.contact
        if isinstance(contact, bytes):
            contact = contact.decode(errors="replace")
        onion = advert.onion_in(contact)
        if status is None or onion is None or "Running" not in status.flags:
            continue
        boxes.append(
            BoxInfo(
                nickname=desc.nickname,
                fingerprint=desc.fingerprint,
                flags=tuple(sorted(status.flags)),
                onion=onion,
                address=f"{desc.address}:{desc.or_port}",
                family=tuple(sorted(desc.family or ())),
            )
        )
    return sorted(boxes, key=lambda b: b.nickname)


def resolve(name: str, boxes: list[BoxInfo]) -> BoxInfo:
    """The box called ``name``: a nickname, a fingerprint ($ optional) or an onion address."""
    key = name.strip().removeprefix("$").lower().removesuffix(".onion")
    matches = [b for b in boxes if key in (b.nickname.lower(), b.fingerprint.lower(), b.onion)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(b.nickname for b in boxes) or "none"
    if not matches:
        raise BentoError(
            f"no Bento box called {name!r} in the consensus (boxes: {known})",
            fix="run `bento boxes` to list them",
        )
    raise BentoError(f"{name!r} names several boxes; use a fingerprint or onion address")
