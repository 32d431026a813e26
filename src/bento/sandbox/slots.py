"""The instance slots of one sandbox host: the one count of instances on a box.

Every sandbox holds a slot (its own uid, where the server runs as root) from its start
until its process is reaped, whether it serves a session or waits, warm, in the pool.
There are exactly ``instances_total`` slots, and the server admits a session only while
fewer sessions run; so an admitted session always finds one: a free slot, or one the
pool gives up for it. The pool takes only free slots and never one a session waits for.

>>> import asyncio
>>> async def demo() -> list[int]:
...     slots = Slots(2)
...     first, second = slots.take_free(), slots.take_free()
...     assert slots.take_free() is None  # both are held now
...     waiting = asyncio.ensure_future(slots.wait(make_room=lambda: None, patience=1.0))
...     await asyncio.sleep(0)
...     slots.give(first)  # an instance exited: its slot goes to the session that waits
...     return [await waiting, len(slots)]
>>> asyncio.run(demo())
[0, 0]
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable


class NoSlot(Exception):
    """No slot came free in time: more instances run than the policy's cap (a bug)."""


class Slots:
    def __init__(self, count: int) -> None:
        self._free = list(range(count))
        self._waiting: collections.deque[asyncio.Future[int]] = collections.deque()

    def __len__(self) -> int:
        """Slots free now (none while a session waits for one)."""
        return len(self._free)

    def take_free(self) -> int | None:
        """A free slot, if there is one."""
        return self._free.pop(0) if self._free else None

    async def wait(self, make_room: Callable[[], None], patience: float) -> int:
        """The next slot given back, ahead of the pool: ``make_room`` is called once, to
        have a warm sandbox killed for it; first come, first served."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        make_room()
        try:
            async with asyncio.timeout(patience):
                return await waiter
        except TimeoutError:
            raise NoSlot("every instance slot is in use") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give(waiter.result())  # it was handed over as we were cancelled
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)

    def give(self, slot: int) -> None:
        """A slot back (its instance was reaped): to the session waiting longest, else free."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)  # to the back: the slot used longest ago is reused first
