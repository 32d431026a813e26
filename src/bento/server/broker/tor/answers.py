"""Tor's answers on the functions' tor's control port, each waited for a bounded time.

Stem's calls have no timeout of their own: each blocks its thread until tor answers, and
they queue behind one another (Stem sends one command at a time). A tor that stops
answering (starved of CPU, wedged) would hold a function's request, or an instance's end,
for as long as it is silent. So every wait for a control-port answer is bounded:

>>> import asyncio
>>> asyncio.run(answer("GETINFO version", asyncio.sleep(0, "0.4.9.11")))
'0.4.9.11'

and after :data:`CONTROL_TIMEOUT` seconds it raises :class:`TorSilent`, a BentoError
that names the call. The thread is left to finish (a blocked Stem call cannot be
interrupted); one that a function's request made stays counted against that function's
``threads`` budget until it does (``Ledger.in_thread``), so a silent tor costs the
function its threads, never the box more threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

import stem

from bento.errors import BentoError

log = logging.getLogger("bento.tor_for_functions")
CONTROL_TIMEOUT = 30.0  # seconds; a local tor answers in milliseconds, seconds when starved
_T = TypeVar("_T")


class TorSilent(BentoError):
    """The functions' tor did not answer a control-port call in time."""


async def answer(what: str, call: Awaitable[_T], patience: float | None = None) -> _T:
    """``await call`` (a Stem call in a thread), or TorSilent naming ``what`` once tor has
    not answered for ``patience`` seconds (default :data:`CONTROL_TIMEOUT`)."""
    seconds = CONTROL_TIMEOUT if patience is None else patience
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        raise TorSilent(
            f"the box's Tor for functions did not answer {what} within {seconds:g} s",
            fix="try again later: the box is busy",
        ) from None


async def let_go(what: str, call: Awaitable[object]) -> None:
    """Give something back to tor (close a circuit or stream, remove an onion service):
    bounded like :func:`answer`, and never raising, since what asked is ending anyway.
    A tor that refused (the thing is gone already) is fine; a silent one is logged."""
    try:
        await answer(what, call)
    except (stem.ControllerError, stem.SocketError):
        pass
    except TorSilent as exc:
        log.warning("%s (it may linger in that tor)", exc.message)
