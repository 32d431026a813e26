"""Sandboxes started ahead of need, so that an invocation does not wait for Python to start.

A pooled sandbox is started under the policy's maxima with an empty /function and waits
for its START frame. Only its file systems are fixed by then (its :class:`Shape`: the
size of /tmp, its extra mounts), so a sandbox is only ever given to a function of the
same shape; its rlimits, cgroup and seccomp filter are lowered to the function's when it
is taken. The pool refills with the shape that was last asked for, so that a box serving
one kind of function keeps hitting the pool, and a new shape replaces the oldest idle one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bento.sandbox.instance import Instance
from bento.sandbox.spec import Shape

log = logging.getLogger("bento.sandbox")


class Pool:
    def __init__(self, start: Callable[[Shape], Awaitable[Instance | None]], shape: Shape) -> None:
        """``start`` starts one sandbox of a shape and waits until it is ready (None if it failed)."""
        self._start = start
        self._wanted = shape
        self._idle: list[Instance] = []
        self._changed = asyncio.Event()  # taken from, or asked for another shape
        self._stocked = asyncio.Event()  # a sandbox was added

    def __len__(self) -> int:
        return len(self._idle)

    @property
    def idle(self) -> tuple[Instance, ...]:
        """The sandboxes waiting, oldest first."""
        return tuple(self._idle)

    def take(self, shape: Shape) -> Instance | None:
        """A ready sandbox of ``shape``, if one waits; else ``shape`` is what the pool makes next."""
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

    def _want(self, shape: Shape) -> None:
        if shape != self._wanted and self._idle and all(i.spec.shape != shape for i in self._idle):
            self._idle.pop(0).kill()  # none fits: make room for one that will
        self._wanted = shape
        self._changed.set()

    async def keep(self, size: int, spare_slots: Callable[[], int]) -> None:
        """Keep ``size`` sandboxes ready while more than ``size`` slots are free. Cancel to stop."""
        try:
            while True:
                while len(self._idle) < size and spare_slots() > size:
                    try:
                        instance = await self._start(self._wanted)
                    except Exception:  # a warm sandbox is a convenience: its failure never stops the box
                        log.exception("a warm sandbox could not start")
                        instance = None
                    if instance is None:
                        break  # try again when the pool is next used, not in a tight loop
                    self._idle.append(instance)
                    self._stocked.set()
                self._changed.clear()
                await self._changed.wait()
        finally:
            for instance in self._idle:
                instance.kill()
            self._idle.clear()
