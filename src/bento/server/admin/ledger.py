"""Counts that outlive sessions: what each function and the whole box used since start.

A session's figures live in the session, and the registry forgets ended sessions after a
while; Prometheus counters must never go down. So each session is open in the ledger from
its start until its task has ended, and then booked, once, with its final figures into
its function's account and the box's. A count is what was booked plus what the open
sessions have used so far. A function's account goes when the function does (its series
ends); the box's stays.

>>> ledger = Ledger()
>>> ledger.refused("box-full")
>>> ledger.refusals
Counter({'box-full': 1})

Refusals the broker gives a function's instances count in the box's refusals, as
``broker-<reason>``, and in the function's own, by reason:

>>> ledger.functions["f1"] = Account()
>>> ledger.broker_refused("f1", "budget-circuits")
>>> ledger.refusals["broker-budget-circuits"], ledger.functions["f1"].refusals
(1, Counter({'budget-circuits': 1}))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bento.protocol.messages import ResourceUsage
from bento.server.session import Session


@dataclass
class Account:
    sessions: int = 0  # started
    cpu_seconds: float = 0.0  # of booked sessions
    bytes_in: int = 0
    bytes_out: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # the broker's, by reason

    def add(self, usage: ResourceUsage) -> None:
        self.cpu_seconds += usage.cpu_seconds
        self.bytes_in += usage.bytes_in
        self.bytes_out += usage.bytes_out

    def totals(self, open_sessions: list[Session]) -> dict[str, Any]:
        """The counts: what was booked, plus what the open sessions have used so far."""
        live = [session.info().usage for session in open_sessions]
        return {
            "sessions_total": self.sessions,
            "cpu_seconds_total": round(self.cpu_seconds + sum(u.cpu_seconds for u in live), 3),
            "bytes_in_total": self.bytes_in + sum(u.bytes_in for u in live),
            "bytes_out_total": self.bytes_out + sum(u.bytes_out for u in live),
        }


class Ledger:
    def __init__(self) -> None:
        self.box = Account()
        self.functions: dict[str, Account] = {}
        self.open: dict[str, Session] = {}  # started, not booked yet
        self.refusals: Counter[str] = Counter()

    def started(self, session: Session) -> None:
        self.open[session.id] = session
        self.box.sessions += 1
        self.functions.setdefault(session.function_id, Account()).sessions += 1

    def ended(self, session: Session) -> None:
        """Book the session's final figures (its task has ended: they change no more)."""
        if self.open.pop(session.id, None) is None:
            return
        usage = session.info().usage
        self.box.add(usage)
        if (account := self.functions.get(session.function_id)) is not None:
            account.add(usage)

    def gone(self, function_id: str) -> None:
        self.functions.pop(function_id, None)

    def refused(self, code: str) -> None:
        self.refusals[code] += 1

    def broker_refused(self, function_id: str, reason: str) -> None:
        """The broker refused one of the function's requests; ``reason`` is from a fixed set
        (bento.server.broker.service), never what the function sent."""
        self.refusals[f"broker-{reason}"] += 1
        if (account := self.functions.get(function_id)) is not None:  # none once it has gone
            account.refusals[reason] += 1

    def function_refusals(self, function_id: str) -> dict[str, int]:
        account = self.functions.get(function_id)
        return dict(account.refusals) if account is not None else {}

    def box_totals(self) -> dict[str, Any]:
        return self.box.totals(list(self.open.values()))

    def function_totals(self, function_id: str) -> dict[str, Any]:
        account = self.functions.get(function_id, Account())
        return account.totals([s for s in self.open.values() if s.function_id == function_id])
