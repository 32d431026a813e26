"""LoadBalancer's decisions: which replica takes a connection, when to add and remove one.

Pure state, no I/O and no clock of its own (every call takes ``now``), so that the
function and the unit tests drive the same code::

    >>> pool = Pool(Settings(minimum=1, maximum=3, high=2.0, low=0.5, up_after=5, down_after=30),
    ...             boxes=["b1", "b2"])
    >>> [type(a).__name__ for a in pool.plan(now=0.0)]
    ['Start']
    >>> first = pool.replicas[0]; pool.ready(first, "x" * 56, now=1.0)
    >>> pool.choose() is first
    True

**Balancing: least connections**, ties broken round robin. The LoadBalancer is a proxy:
it sees every connection open and close, so it knows each replica's live count exactly,
and a replica slowed by long requests gets fewer new ones; round robin would keep
sending it its share. Ties rotate, so equally idle replicas share a light load.

**Scaling: watermarks on the load**, the average of live connections per replica. Above
``high`` for ``up_after`` seconds: one more replica (up to ``maximum``), one at a time
(a replica still starting counts as capacity, so a burst does not start many). Below
``low`` for ``down_after`` seconds: one fewer (down to ``minimum``): the chosen replica
is *drained* (no new connections) and stopped only once it holds none.

**Loss**: a replica whose session ends, whose box goes away, or that does not say it is
ready within ``start_timeout`` is dropped; its box is avoided for ``box_backoff``
seconds, and the shortfall is started elsewhere by the next :meth:`Pool.plan`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

MAX_REPLICAS = 64  # a box caps a function's instances at 64 by default (instances_per_function)


@dataclass(frozen=True)
class Settings:
    minimum: int = 1
    maximum: int = 4
    high: float = 2.0  # live connections per replica above which one is added
    low: float = 0.5  # ... and below which one is removed
    up_after: float = 5.0  # seconds the load must stay above high
    down_after: float = 30.0  # ... or below low
    start_timeout: float = 180.0  # seconds for a new replica to publish its onion service
    box_backoff: float = 60.0  # seconds a box is avoided after a replica on it failed

    def check(self) -> None:
        """ValueError, saying which, unless the settings make sense."""
        if not 1 <= self.minimum <= self.maximum <= MAX_REPLICAS:
            raise ValueError(
                f"need 1 <= min <= max <= {MAX_REPLICAS} (got min {self.minimum}, max {self.maximum})"
            )
        if not 0 <= self.low < self.high:
            raise ValueError(f"need 0 <= low < high (got low {self.low}, high {self.high})")
        for name in ("up_after", "down_after", "start_timeout", "box_backoff"):
            if not 0 <= getattr(self, name) <= 86400:
                raise ValueError(f"{name} must be between 0 and 86400 seconds")


STARTING, READY, DRAINING, GONE = "starting", "ready", "draining", "gone"
_ids = itertools.count(1)


@dataclass(eq=False)
class Replica:
    box: str
    since: float
    id: int = field(default_factory=lambda: next(_ids))
    state: str = STARTING
    address: str = ""
    live: int = 0
    served: int = 0

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "box": self.box, "state": self.state, "live": self.live, "served": self.served}


@dataclass(frozen=True)
class Start:
    replica: Replica  # new, in state "starting": start it on replica.box


@dataclass(frozen=True)
class Stop:
    replica: Replica  # stop its session (drained to no connections, or failed to start)
    why: str


class Pool:
    """The replicas and the decisions; the caller carries out what :meth:`plan` returns."""

    def __init__(self, settings: Settings, boxes: list[str]) -> None:
        settings.check()
        if not boxes:
            raise ValueError("at least one box for replicas")
        self.settings = settings
        self.boxes = list(dict.fromkeys(boxes))
        self.replicas: list[Replica] = []
        self.desired = settings.minimum
        self._turn = 0
        self._above_since: float | None = None
        self._below_since: float | None = None
        self._box_down: dict[str, float] = {}

    # --- connections ----------------------------------------------------------------------

    def choose(self, avoid: frozenset[int] = frozenset()) -> Replica | None:
        """The ready replica with the fewest live connections (ties: round robin)."""
        ready = [r for r in self.replicas if r.state == READY and r.id not in avoid]
        if not ready:
            return None
        fewest = min(r.live for r in ready)
        tied = [r for r in ready if r.live == fewest]
        self._turn += 1
        return tied[self._turn % len(tied)]

    def opened(self, replica: Replica) -> None:
        replica.live += 1

    def closed(self, replica: Replica, served: bool = True) -> None:
        replica.live = max(0, replica.live - 1)
        replica.served += served

    # --- what the replicas say ------------------------------------------------------------

    def ready(self, replica: Replica, address: str, now: float) -> None:
        if replica.state == STARTING:
            replica.state, replica.address, replica.since = READY, address, now

    def lost(self, replica: Replica, now: float) -> bool:
        """The replica is gone (its session ended, its box went away); True if it was not
        already. Its box is avoided for a while unless we were stopping it."""
        if replica.state == GONE:
            return False
        if replica.state in (STARTING, READY):
            self._box_down[replica.box] = now + self.settings.box_backoff
        replica.state = GONE
        self.replicas.remove(replica)
        return True

    def box_failed(self, box: str, now: float) -> None:
        self._box_down[box] = now + self.settings.box_backoff

    # --- scaling --------------------------------------------------------------------------

    def load(self) -> float:
        """Live connections per replica that takes new ones (starting ones count as capacity)."""
        serving = [r for r in self.replicas if r.state in (STARTING, READY)]
        live = sum(r.live for r in self.replicas if r.state == READY)
        return live / len(serving) if serving else 0.0

    def plan(self, now: float) -> list[Start | Stop]:
        """What to do now: start replicas up to the desired count, stop drained ones."""
        s, actions = self.settings, list[Start | Stop]()
        for replica in self.replicas:
            if replica.state == STARTING and now - replica.since > s.start_timeout:
                self.lost(replica, now)
                actions.append(Stop(replica, f"not ready within {s.start_timeout:g} s"))
        load, starting = self.load(), any(r.state == STARTING for r in self.replicas)
        self._above_since = (
            (self._above_since if self._above_since is not None else now) if load > s.high else None
        )
        self._below_since = (
            (self._below_since if self._below_since is not None else now) if load < s.low else None
        )
        if self._above_since is not None and now - self._above_since >= s.up_after and not starting:
            if self.desired < s.maximum:
                self.desired += 1
            self._above_since = None
        if self._below_since is not None and now - self._below_since >= s.down_after:
            if self.desired > s.minimum:
                self.desired -= 1
            self._below_since = None
        active = [r for r in self.replicas if r.state in (STARTING, READY)]
        if len(active) > self.desired:
            self._drain(active, len(active) - self.desired)
        for replica in [r for r in self.replicas if r.state == DRAINING and r.live == 0]:
            replica.state = GONE
            self.replicas.remove(replica)
            actions.append(Stop(replica, "drained: below the low watermark"))
        for _ in range(self.desired - len(active)):
            box = self._pick_box(now)
            if box is None:
                break
            replica = Replica(box, now)
            self.replicas.append(replica)
            actions.append(Start(replica))
        return actions

    def _drain(self, active: list[Replica], count: int) -> None:
        # The fewest live connections first, then the newest: it empties soonest.
        for replica in sorted(active, key=lambda r: (r.live, -r.since))[:count]:
            replica.state = DRAINING

    def _pick_box(self, now: float) -> str | None:
        usable = [b for b in self.boxes if self._box_down.get(b, 0.0) <= now]
        if not usable:
            return None
        count = {b: 0 for b in usable}
        for replica in self.replicas:
            if replica.box in count and replica.state != GONE:
                count[replica.box] += 1
        return min(usable, key=lambda b: (count[b], self.boxes.index(b)))

    def status(self) -> dict[str, object]:
        return {
            "desired": self.desired,
            "load": round(self.load(), 3),
            "replicas": [r.as_json() for r in self.replicas],
        }
