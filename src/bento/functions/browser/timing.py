"""When Browser delivers a page: at a deadline from a small set, at a constant rate.

Padding hides how big a page is, not when it was ready: the download starts once the box has
fetched the page, and that moment differs more between sites than between visits of one site
(docs/evaluation.md measured it: k-FP still finds 15% of 50 sites behind 7 MB of padding).
A *delivery schedule* hides it too. The user names a few deadlines, in seconds after her
request, and a rate; for each deadline ``T`` the box sends in a fixed window, from ``T / 2``
to ``T``, exactly ``rate * T / 2`` bytes at that constant rate (the page, then padding). The
page takes the first deadline whose window it is ready for and fits in; one that is not ready
in time, or too big, goes to the next. So on the user's link a download starts, lasts and
weighs one of a few fixed amounts whatever the site: all the attacker learns is which
deadline, at most log2 of their number bits, as a padded size class would tell.

    >>> schedule = Schedule(deadlines=(5.0, 10.0, 20.0, 40.0), rate=500_000)
    >>> schedule.window(10.0), schedule.size(10.0)
    ((5.0, 10.0), 2500000)
    >>> schedule.choose(ready=3.1, transfer=800_000)  # missed the 5 s window's start (2.5 s)
    10.0
    >>> schedule.choose(ready=1.0, transfer=1_800_000)  # in time, but over the 5 s window's 1.25 MB
    10.0
    >>> schedule.choose(ready=25.0, transfer=1_000) is None  # after the last window began
    True
    >>> schedule.deadline_of(2_500_000)  # the client: which deadline a transfer's length is
    10.0

Where this comes from. BuFLO (Dyer et al., "Peek-a-Boo, I Still See You", IEEE S&P 2012)
sends fixed-size packets at a fixed rate for at least a fixed time; CS-BuFLO (Cai, Nithyanand
and Johnson, WPES 2014) pads a transmission's length to a power of two instead of one fixed
length; Tamaraw (Cai et al., "A Systematic Approach to Developing and Evaluating Website
Fingerprinting Defenses", CCS 2014) sends at fixed rates and pads the packet count to a
multiple, the defense with the lowest provable bound on what an attacker learns; Walkie-Talkie
(Wang and Goldberg, USENIX Security 2017) makes a page's bursts those of a decoy. All of them
shape a live browser's traffic, packet by packet, and pay for it in latency. Browser has the
whole page at the box before the first byte goes, so it can do what they approximate
exactly, at the cost of waiting: one download, at a constant rate, in a window from a
geometric set (CS-BuFLO's powers of two, applied to time).

Runs in the box's sandbox with the standard library only; the client checks the same rules
before it asks (``client.Timing``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_DEADLINES = (5.0, 10.0, 20.0, 40.0)
DEFAULT_RATE = 500_000  # bytes/s: about 1,000 cells/s, what the testnet's circuits carry (link cover's)
MAX_DEADLINES = 8
MIN_DEADLINE, MAX_DEADLINE = 1.0, 240.0  # seconds; Browser's manifest gives a session 300 s
MIN_RATE, MAX_RATE = 10_000, 10_000_000  # bytes/s
MAX_TRANSFER = 128 << 20  # the most one window may carry (Browser may send 256 MB a session)
TICKS_PER_SECOND = 20  # the box sends every 50 ms: a constant rate at Tor's own granularity


class TimingError(ValueError):
    """The schedule is not one Browser keeps; the message says which rule it breaks."""


@dataclass(frozen=True)
class Schedule:
    """Deadlines (seconds after the request, increasing) and the rate (bytes/s) of every window."""

    deadlines: tuple[float, ...] = DEFAULT_DEADLINES
    rate: int = DEFAULT_RATE

    def __post_init__(self) -> None:
        deadlines, rate = self.deadlines, self.rate
        if not isinstance(deadlines, tuple) or not 1 <= len(deadlines) <= MAX_DEADLINES:
            raise TimingError(f"a schedule has 1 to {MAX_DEADLINES} deadlines")
        for deadline in deadlines:
            if isinstance(deadline, bool) or not isinstance(deadline, int | float):
                raise TimingError(f"a deadline is a number of seconds, not {deadline!r}")
            if not (math.isfinite(deadline) and MIN_DEADLINE <= deadline <= MAX_DEADLINE):
                raise TimingError(
                    f"a deadline must be {MIN_DEADLINE:g} to {MAX_DEADLINE:g} s after the request, "
                    f"not {deadline!r}"
                )
        if any(later <= earlier for earlier, later in itertools.pairwise(deadlines)):
            raise TimingError(f"the deadlines must increase: {', '.join(f'{d:g}' for d in deadlines)}")
        if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
            raise TimingError(f"the rate must be {MIN_RATE} to {MAX_RATE} bytes/s, not {rate!r}")
        if self.size(deadlines[-1]) > MAX_TRANSFER:
            raise TimingError(
                f"the last window would carry {self.size(deadlines[-1])} bytes: at most {MAX_TRANSFER}; "
                "ask for a lower rate or an earlier last deadline"
            )

    @classmethod
    def parse(cls, given: Any) -> Schedule:
        """The schedule a request names: exactly ``{"deadlines": [...], "rate": N}``."""
        if not isinstance(given, dict) or set(given) != {"deadlines", "rate"}:
            raise TimingError('a schedule is {"deadlines": [seconds, ...], "rate": bytes per second}')
        deadlines = given["deadlines"]
        if not isinstance(deadlines, list | tuple):
            raise TimingError("the deadlines are a list of seconds")
        return cls(tuple(deadlines), given["rate"])

    def request(self) -> dict[str, Any]:
        return {"deadlines": list(self.deadlines), "rate": self.rate}

    def window(self, deadline: float) -> tuple[float, float]:
        """When the transfer of ``deadline`` runs, in seconds after the request: its second half."""
        return deadline / 2, float(deadline)

    def size(self, deadline: float) -> int:
        """The bytes the window of ``deadline`` carries: its length at the rate."""
        start, end = self.window(deadline)
        return int(self.rate * (end - start))

    def choose(self, ready: float, transfer: int) -> float | None:
        """The first deadline whose window begins after ``ready`` (seconds after the request)
        and holds ``transfer`` bytes; None when none is left."""
        for deadline in self.deadlines:
            if ready <= self.window(deadline)[0] and transfer <= self.size(deadline):
                return deadline
        return None

    def deadline_of(self, transfer: int) -> float | None:
        """The deadline whose window carries exactly ``transfer`` bytes (None: no window does)."""
        return next((d for d in self.deadlines if self.size(d) == transfer), None)

    def next_end(self, now: float) -> float:
        """The end of the first window not yet begun at ``now`` (else the last): when a failure
        is told, so that its time says no more than a page's would."""
        return next((d for d in self.deadlines if now <= self.window(d)[0]), self.deadlines[-1])


def pace(total: int, start: float, end: float) -> Iterator[tuple[float, int]]:
    """``(when, bytes)`` to send ``total`` bytes evenly from ``start`` to ``end`` (any clock).

    >>> [(round(at, 2), count) for at, count in pace(100, 1.0, 1.2)]
    [(1.0, 25), (1.05, 25), (1.1, 25), (1.15, 25)]
    """
    ticks = max(1, math.ceil((end - start) * TICKS_PER_SECOND))
    for tick in range(ticks):
        count = total * (tick + 1) // ticks - total * tick // ticks
        if count:
            yield start + (end - start) * tick / ticks, count
