"""Sandboxes started ahead of need, so that an invocation does not wait for Python to start.

A pooled sandbox is started under the policy's maxima with an empty /function and waits
for its START frame. Only its file systems are fixed by then (its :class:`Shape`: the
size of /tmp, its extra mounts), so a sandbox is only ever given to a function of the
same shape; its rlimits, cgroup and seccomp filter are lowered to the function's when it
is taken. Each is a whole sandbox of its own (its slot, uid, namespaces and cgroup), used
by one instance and never again. The pool refills with the shape that was last asked
for, so that a box serving one kind of function keeps hitting the pool: sandboxes of a
shape asked for before give their places up, oldest first, a few at a time, until the
pool holds as many of the new shape as a recent burst of it asked for.

How many it keeps follows demand: the most sandboxes asked for within two windows in a row
(:data:`BURST_WINDOW` each, so that a burst split by a window's end counts whole) during the
last :data:`MEMORY` seconds, between ``least`` and ``most``. A burst of 128 sessions starts
128 sandboxes cold (about 40 ms of CPU each, the whole burst's CPU), but it teaches the pool
to hold 128, so the next burst takes ready ones (a few ms each); when the bursts stop, the
pool shrinks back to ``least``.

>>> demand = Demand(clock=iter([0.0, 2.5, 3.5, 40.0]).__next__)
>>> for _ in range(4):
...     demand.asked()  # three across a window's end, then one alone
>>> demand.peak(now=50.0), demand.peak(now=200.0)  # remembered, then forgotten
(3, 0)
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Hashable

from bento.sandbox.instance import Instance
from bento.sandbox.spec import Shape

log = logging.getLogger("bento.sandbox")

BURST_WINDOW = 3.0  # seconds: sandboxes asked for within this (or two in a row) are one burst's
MEMORY = 120.0  # seconds a burst is remembered: the pool shrinks back after this long without one
# Sandboxes the pool starts at once while it grows: a growing pool is not what a session
# waits for, so it leaves the rest of the CPU to the sessions (and stops while one starts cold).
REFILL_AT_ONCE = os.cpu_count() or 1
ALL = object()  # Demand.peak of every shape together


class Demand:
    """Sandboxes asked for, counted per :data:`BURST_WINDOW`, over the last :data:`MEMORY` seconds,
    in all and of each shape."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (window index, count of each shape asked for in it); a shape forgotten with its window
        self._windows: collections.deque[tuple[int, collections.Counter[Hashable]]] = collections.deque()

    def asked(self, shape: Hashable = None) -> None:
        window = int(self._clock() // BURST_WINDOW)
        if not self._windows or self._windows[-1][0] != window:
            self._windows.append((window, collections.Counter()))
        self._windows[-1][1][shape] += 1
        self._forget(window)

    def peak(self, now: float | None = None, *, of: Hashable = ALL) -> int:
        """The most asked for (``of`` one shape, else in all) within two windows in a row that
        are still remembered."""
        self._forget(int((self._clock() if now is None else now) // BURST_WINDOW))
        counts = {window: (asked.total() if of is ALL else asked[of]) for window, asked in self._windows}
        return max((count + counts.get(window - 1, 0) for window, count in counts.items()), default=0)

    def _forget(self, window: int) -> None:
        while self._windows and self._windows[0][0] <= window - MEMORY / BURST_WINDOW:
            self._windows.popleft()


class Pool:
    def __init__(self, start: Callable[[Shape], Awaitable[Instance | None]], shape: Shape) -> None:
        """``start`` starts one sandbox of a shape and waits until it is ready (None if it failed)."""
        self._start = start
        self._wanted = shape
        self._idle: list[Instance] = []
        self.demand = Demand()
        self._changed = asyncio.Event()  # taken from, asked for another shape, or room came free
        self._stocked = asyncio.Event()  # a sandbox was added
        self._resting_until = 0.0  # a start failed: none until then (loop time)

    def __len__(self) -> int:
        return len(self._idle)

    @property
    def idle(self) -> tuple[Instance, ...]:
        """The sandboxes waiting, oldest first."""
        return tuple(self._idle)

    def take(self, shape: Shape) -> Instance | None:
        """A ready sandbox of ``shape``, if one waits; else ``shape`` is what the pool makes next."""
        self.demand.asked(shape)
        self._idle = [i for i in self._idle if i.process.returncode is None]  # died while waiting
        for index in range(len(self._idle) - 1, -1, -1):
            if self._idle[index].spec.shape == shape:
                instance = self._idle.pop(index)
                self._want(shape)
                return instance
        self._want(shape)
        return None

    async def stocked(self, shape: Shape, count: int = 1) -> None:
        """Wait until ``count`` sandboxes of ``shape`` are ready (asking for that shape from now on)."""
        self._want(shape)
        while sum(i.spec.shape == shape and i.process.returncode is None for i in self._idle) < count:
            self._stocked.clear()
            await self._stocked.wait()

    def evict(self) -> bool:
        """Kill the oldest waiting sandbox, so that its slot goes to an admitted session
        (the pool only ever holds slots that no session needs); False if none waits."""
        if not self._idle:
            return False
        self._idle.pop(0).kill()
        return True

    def poke(self) -> None:
        """Room may have come free (a cold start ended): look again at what to start."""
        self._changed.set()

    def target(self, least: int, most: int) -> int:
        """How many sandboxes the pool keeps now: recent demand, between ``least`` and ``most``."""
        return max(least, min(most, self.demand.peak()))

    def _want(self, shape: Shape) -> None:
        if shape != self._wanted and self._idle and all(i.spec.shape != shape for i in self._idle):
            self._idle.pop(0).kill()  # none fits: make room for one that will
        self._wanted = shape
        self._changed.set()

    async def keep(self, least: int, most: int, room: Callable[[], int]) -> None:
        """Keep as many sandboxes ready as :meth:`target` says, each in a slot ``room()`` counts
        free (0 while a session starts cold or waits for a slot). Cancel to stop."""
        starting: dict[asyncio.Task[None], Shape] = {}
        try:
            while True:
                self._changed.clear()
                target = self.target(least, most)
                while len(self._idle) > target:
                    self._idle.pop(0).kill()  # demand went down: the oldest goes first
                resting = asyncio.get_running_loop().time() < self._resting_until
                if not resting:  # never a victim that nothing could replace yet
                    self._make_way(target, starting)
                while len(self._idle) + len(starting) < target and len(starting) < REFILL_AT_ONCE:
                    if room() <= len(starting) or resting:
                        break
                    task = asyncio.create_task(self._add(self._wanted))
                    starting[task] = self._wanted
                    task.add_done_callback(functools.partial(self._started, starting))
                # Shrinking is a matter of time: look again at the end of each window.
                try:
                    async with asyncio.timeout(BURST_WINDOW):
                        await self._changed.wait()
                except TimeoutError:
                    pass
        finally:
            for task in starting:
                task.cancel()
            await asyncio.gather(*starting, return_exceptions=True)
            for instance in self._idle:
                instance.kill()
            self._idle.clear()

    def _make_way(self, target: int, starting: dict[asyncio.Task[None], Shape]) -> None:
        """Kill the oldest waiting sandboxes of shapes asked for before, while the pool is full
        and holds fewer of the shape asked for now than a recent burst of it asked for: as many
        as can start in their place now. A burst of one function then finds the pool it taught,
        not the leftovers of another's; and a pool that also serves other shapes gives up no
        more of theirs than that burst's."""
        wanted = min(target, max(1, self.demand.peak(of=self._wanted)))  # one at least: it was asked for
        ours = sum(
            shape == self._wanted for shape in [*starting.values(), *(i.spec.shape for i in self._idle)]
        )
        growing = max(0, target - len(self._idle) - len(starting))  # places that need no victim
        count = min(REFILL_AT_ONCE - len(starting), wanted - ours) - growing
        for instance in [i for i in self._idle if i.spec.shape != self._wanted][: max(0, count)]:
            self._idle.remove(instance)
            instance.kill()

    def _started(self, starting: dict[asyncio.Task[None], Shape], task: asyncio.Task[None]) -> None:
        starting.pop(task, None)
        self._changed.set()

    async def _add(self, shape: Shape) -> None:
        try:
            instance = await self._start(shape)
        except Exception:  # a warm sandbox is a convenience: its failure never stops the box
            log.exception("a warm sandbox could not start")
            instance = None
        if instance is None:
            # Killed for a session's slot, no slot, or not ready in time (a host overloaded):
            # try again a window later, not in a tight loop.
            self._resting_until = asyncio.get_running_loop().time() + BURST_WINDOW
            return
        self._idle.append(instance)
        self._stocked.set()
