"""Per-function budgets: everything a function can make the box hold, declared once and counted once.

A :class:`BudgetSpec` is data, like the sandbox's spec: what one function (all its instances
together) may hold at once, from its manifest's needs capped by the node policy. A
:class:`Ledger` counts against it. A unit is taken *before* any await, so requests
answered at once cannot pass a check together, and given back exactly once, in ``finally``
or when the thing it stands for (a circuit, an onion service, a stream) goes away:

>>> ledger = Ledger(BudgetSpec(circuits=1))
>>> held = ledger.take("circuits")
>>> try:
...     ledger.take("circuits")
... except Exhausted as exc:
...     print(exc)
this function holds 1 circuits, its limit (needs.tor_circuits, at most the box's tor.max_circuits)
>>> held.release(); held.release()  # once, however often it is called
>>> ledger.usage()["circuits"]
0

Rates (circuits built per minute) are taken and never given back: they leave the window.

Blocking work a function's request causes (its storage's disk and cipher, its Stem calls)
runs through :meth:`Ledger.in_thread`, in a pool of the functions' own, so a function that
fills its share of threads waits on itself, never holds up the server's own threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from typing import Literal, ParamSpec, TypeVar

from bento.protocol.policy import Needs, NodePolicy
from bento.server.broker.gate import Denied

Resource = Literal[
    "listeners",
    "onion_services",
    "circuits",
    "streams",
    "storage_transfers",
    "storage_bytes",
    "lookups",
    "threads",
]
RATE_WINDOW = 60.0  # seconds: the window of circuits_per_minute
STORAGE_TRANSFERS = 4  # values travelling at once per function; each may hold a value in server memory
FUNCTION_THREADS = 4  # threads one function's storage and Tor calls may occupy at once
THREAD_PATIENCE = 10.0  # seconds a call waits for one of its function's threads before it is refused
# Every function's blocking calls share this pool, not the loop's default executor: however
# many functions fill their budgets, the server's own to_thread calls (start-up, clean-up)
# never queue behind them. Threads start only as calls need them.
FUNCTION_POOL_THREADS = 32  # all functions' together: each holds at most its ``threads`` of them
_FUNCTION_POOL = concurrent.futures.ThreadPoolExecutor(
    FUNCTION_POOL_THREADS, thread_name_prefix="bento-function"
)
_P = ParamSpec("_P")
_T = TypeVar("_T")

# Where each budget comes from, for the refusal's message (the fix names the knob).
_SOURCE: dict[str, str] = {
    "listeners": "the box's network.max_listeners",
    "onion_services": "needs.onion_services, at most the box's tor.max_onion_services",
    "circuits": "needs.tor_circuits, at most the box's tor.max_circuits",
    "streams": "the box's tor.max_streams",
    "storage_transfers": "values read or written at once",
    "storage_bytes": "bytes of values in flight, the function's storage quota",
    "lookups": "the box's network.max_lookups",
    "threads": "the box's threads a function's storage and Tor calls may occupy at once",
    "circuits_per_minute": "the box's tor.max_circuits_per_minute",
}


class Exhausted(Denied):
    """A budget is spent: the request is refused; what is held goes on. ``budget`` names it
    (a field of :class:`BudgetSpec`), for the operator's count of refusals; ``for_now``: the
    same request may pass once a unit comes back (False: the function has none at all)."""

    def __init__(self, budget: str, message: str, *, for_now: bool = True) -> None:
        super().__init__(message)
        self.budget, self.for_now = budget, for_now


@dataclass(frozen=True)
class BudgetSpec:
    """What one function may hold at once (0: none at all)."""

    listeners: int = 0  # server-side copies of listeners an onion service may lead to
    onion_services: int = 0
    circuits: int = 0
    circuits_per_minute: int = 0
    streams: int = 0  # Tor streams open in the functions' tor
    storage_transfers: int = 0
    storage_bytes: int = 0
    lookups: int = 0
    threads: int = 0  # the functions' pool's threads its storage and Tor calls occupy at once

    @classmethod
    def of(cls, needs: Needs, policy: NodePolicy) -> BudgetSpec:
        """The budgets of a function with ``needs`` on a box with ``policy``."""
        tor, network = policy.tor, policy.network
        circuits = min(needs.tor_circuits, tor.max_circuits) if tor.circuits else 0
        onions = min(needs.onion_services, tor.max_onion_services) if tor.onion_services else 0
        calls = needs.call_boxes and tor.call_boxes
        storage = needs.storage_mb << 20 if needs.storage_mb and policy.storage.allowed else 0
        blocking = storage or circuits or onions or calls  # what reaches the disk or Stem
        return cls(
            listeners=network.max_listeners if onions and needs.listen and network.listen else 0,
            onion_services=onions,
            circuits=circuits,
            circuits_per_minute=tor.max_circuits_per_minute if circuits else 0,
            streams=tor.max_streams if circuits or calls else 0,
            storage_transfers=STORAGE_TRANSFERS if storage else 0,
            storage_bytes=storage,
            lookups=network.max_lookups if needs.network and network.allowed else 0,
            threads=FUNCTION_THREADS if blocking else 0,
        )


@dataclass
class Hold:
    """Units of one budget, held until :meth:`release` (idempotent)."""

    ledger: Ledger
    resource: Resource
    amount: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.ledger.used[self.resource] -= self.amount
            self.ledger._freed.set()


@dataclass
class Ledger:
    """One function's use of its budgets, shared by all its instances."""

    spec: BudgetSpec
    used: dict[str, int] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _built: deque[float] = field(default_factory=deque)

    _freed: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever a unit comes back

    def __post_init__(self) -> None:
        self.used = {f.name: 0 for f in fields(BudgetSpec) if f.name != "circuits_per_minute"}

    def take(self, resource: Resource, amount: int = 1) -> Hold:
        """Hold ``amount`` units of ``resource`` (synchronous: nothing runs in between); Exhausted if over."""
        limit: int = getattr(self.spec, resource)
        held = self.used[resource]
        if held + amount > limit:
            if held == 0 and limit == 0:
                raise Exhausted(
                    resource,
                    f"this function has no budget for {resource} ({_SOURCE[resource]})",
                    for_now=False,
                )
            raise Exhausted(
                resource, f"this function holds {held} {resource}, its limit ({_SOURCE[resource]})"
            )
        self.used[resource] = held + amount
        return Hold(self, resource, amount)

    @contextlib.asynccontextmanager
    async def hold(self, resource: Resource, amount: int = 1) -> AsyncIterator[Hold]:
        """Hold units for the time of a block: taken before it awaits anything, given back in ``finally``."""
        taken = self.take(resource, amount)
        try:
            yield taken
        finally:
            taken.release()

    @contextlib.asynccontextmanager
    async def queue(self, resource: Resource, patience: float) -> AsyncIterator[Hold]:
        """Like :meth:`hold`, but wait up to ``patience`` s for a unit to come back: for work a
        function does many of at once and each briefly (a page's lookups), where waiting on
        itself is kinder than failing. Exhausted if none comes back in time (or none exists)."""
        taken = await self._wait_for(resource, patience)
        try:
            yield taken
        finally:
            taken.release()

    async def in_thread(self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``work(*args, **kwargs)`` in the functions' pool, under one of this function's
        ``threads`` (waiting up to THREAD_PATIENCE s for one, like :meth:`queue`). The unit is
        given back when the thread is done, however the call ends: a caller cancelled while
        the thread runs does not free it before the thread does."""
        taken = await self._wait_for("threads", THREAD_PATIENCE)
        loop = asyncio.get_running_loop()
        try:
            call = functools.partial(work, *args, **kwargs)
            done = _FUNCTION_POOL.submit(contextvars.copy_context().run, call)
        except BaseException:
            taken.release()
            raise
        done.add_done_callback(lambda _: _on_loop(loop, taken.release))  # if we stop waiting first
        try:
            return await asyncio.wrap_future(done)
        finally:
            if done.done():  # it ran, raised, or never started: the thread is free now
                taken.release()

    async def _wait_for(self, resource: Resource, patience: float) -> Hold:
        try:
            async with asyncio.timeout(patience):
                while True:
                    try:
                        taken = self.take(resource)
                        break
                    except Exhausted:
                        if not getattr(self.spec, resource):
                            raise
                        self._freed.clear()
                        await self._freed.wait()
        except TimeoutError:
            raise Exhausted(
                resource, f"{resource}: none of this function's came back in {patience:.0f} s"
            ) from None
        return taken

    def build_circuit(self) -> None:
        """Count one circuit built against the per-minute rate; Exhausted if the minute is full."""
        now = self.clock()
        while self._built and now - self._built[0] >= RATE_WINDOW:
            self._built.popleft()
        if len(self._built) >= self.spec.circuits_per_minute:
            raise Exhausted(
                "circuits_per_minute",
                f"this function built {len(self._built)} circuits in the last minute, its limit "
                f"({_SOURCE['circuits_per_minute']}); reuse a circuit or wait",
            )
        self._built.append(now)

    def limits(self) -> dict[str, int]:
        """Each budget: the most the function may hold (circuits_per_minute: build in a minute)."""
        return {f.name: int(getattr(self.spec, f.name)) for f in fields(BudgetSpec)}

    def usage(self) -> dict[str, int]:
        """What is held now, per budget, and the circuits built in the last minute."""
        now = self.clock()
        recent = sum(1 for t in self._built if now - t < RATE_WINDOW)
        return {**self.used, "circuits_per_minute": recent}


def _on_loop(loop: asyncio.AbstractEventLoop, give_back: Callable[[], None]) -> None:
    """Run ``give_back`` on ``loop``, whichever thread calls (the pool's, or the loop's own when
    a call is cancelled before it starts); a loop already closed holds nothing."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(give_back)
