"""Counts that outlive sessions: what each function and the whole box used since start.

A session's figures live in the session, and the registry forgets ended sessions after a
while; Prometheus counters must never go down. So each session is booked once, when it
ends, into its function's account and the box's; a function's account goes when the
function does (its series ends), the box's stays.

>>> ledger = Ledger()
>>> ledger.refused("box-full")
>>> ledger.refusals
Counter({'box-full': 1})
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bento.protocol.messages import ResourceUsage


@dataclass
class Account:
    sessions: int = 0  # started
    cpu_seconds: float = 0.0  # of ended sessions
    bytes_in: int = 0  # of ended sessions
    bytes_out: int = 0

    def add(self, usage: ResourceUsage) -> None:
        self.cpu_seconds += usage.cpu_seconds
        self.bytes_in += usage.bytes_in
        self.bytes_out += usage.bytes_out


class Ledger:
    def __init__(self) -> None:
        self.box = Account()
        self.functions: dict[str, Account] = {}
        self.refusals: Counter[str] = Counter()

    def started(self, function_id: str) -> None:
        self.box.sessions += 1
        self.functions.setdefault(function_id, Account()).sessions += 1

    def ended(self, function_id: str, usage: ResourceUsage) -> None:
        self.box.add(usage)
        if (account := self.functions.get(function_id)) is not None:
            account.add(usage)

    def gone(self, function_id: str) -> None:
        self.functions.pop(function_id, None)

    def refused(self, code: str) -> None:
        self.refusals[code] += 1
