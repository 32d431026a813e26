"""Per-function budgets: declared from the manifest and the policy, taken and given back once."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bento.protocol.policy import Needs, NodePolicy
from bento.server.broker import budgets
from bento.server.broker.budgets import BudgetSpec, Exhausted, Ledger

BOX = NodePolicy(
    network={"allowed": True, "listen": True, "max_listeners": 5, "max_lookups": 3},
    tor={"circuits": True, "max_circuits": 4, "max_circuits_per_minute": 10, "onion_services": True},
    storage={"allowed": True, "max_mb": 8},
)


def test_the_spec_is_the_manifest_capped_by_the_policy() -> None:
    spec = BudgetSpec.of(
        Needs(network=True, listen=True, tor_circuits=9, onion_services=1, storage_mb=2), BOX
    )
    assert spec == BudgetSpec(
        listeners=5,
        onion_services=1,
        circuits=4,
        circuits_per_minute=10,
        streams=256,
        storage_transfers=4,
        storage_bytes=2 << 20,
        lookups=3,
        threads=4,
    )
    assert BudgetSpec.of(Needs(), BOX) == BudgetSpec(), "a manifest that asks for nothing holds nothing"
    closed = BudgetSpec.of(Needs(network=True, tor_circuits=2, storage_mb=1), NodePolicy())
    assert closed == BudgetSpec(), "a policy that offers nothing grants nothing, whatever is asked"


async def test_units_come_back_once_however_the_work_ends() -> None:
    ledger = Ledger(BudgetSpec(lookups=2))
    with pytest.raises(RuntimeError):
        async with ledger.hold("lookups"), ledger.hold("lookups"):
            with pytest.raises(Exhausted, match="holds 2 lookups, its limit"):
                ledger.take("lookups")
            raise RuntimeError("the work failed")
    assert ledger.usage()["lookups"] == 0
    with pytest.raises(Exhausted, match="no budget for streams"):
        ledger.take("streams")


def test_circuits_built_per_minute_leave_the_window_as_time_passes() -> None:
    now = [1000.0]
    ledger = Ledger(BudgetSpec(circuits_per_minute=3), clock=lambda: now[0])
    for _ in range(3):
        ledger.build_circuit()
    with pytest.raises(Exhausted, match="built 3 circuits in the last minute"):
        ledger.build_circuit()
    now[0] += 59.9
    with pytest.raises(Exhausted):
        ledger.build_circuit()
    now[0] += 0.2  # the first three are a minute old
    ledger.build_circuit()
    assert ledger.usage()["circuits_per_minute"] == 1


async def test_a_queued_unit_waits_for_one_to_come_back_and_gives_up_in_time() -> None:
    ledger = Ledger(BudgetSpec(lookups=1))
    first = ledger.take("lookups")
    waiting = asyncio.ensure_future(_queued(ledger))
    await asyncio.sleep(0)
    assert not waiting.done() and ledger.usage()["lookups"] == 1
    first.release()
    assert await asyncio.wait_for(waiting, 5) == 1, "it held the unit that came back"
    assert ledger.usage()["lookups"] == 0
    held = ledger.take("lookups")
    with pytest.raises(Exhausted, match="came back in 0 s"):
        async with ledger.queue("lookups", 0.01):
            pass
    held.release()
    with pytest.raises(Exhausted, match="no budget"):
        async with Ledger(BudgetSpec()).queue("lookups", 5):
            pass


async def _queued(ledger: Ledger) -> int:
    async with ledger.queue("lookups", 5):
        return ledger.usage()["lookups"]


async def test_a_thread_unit_comes_back_when_the_call_raises() -> None:
    ledger = Ledger(BudgetSpec(threads=1))

    def broken() -> None:
        raise OSError("the disk failed")

    with pytest.raises(OSError, match="the disk failed"):
        await ledger.in_thread(broken)
    assert ledger.usage()["threads"] == 0
    assert await ledger.in_thread(sum, [1, 2]) == 3 and ledger.usage()["threads"] == 0
    with pytest.raises(Exhausted, match="no budget for threads"):
        await Ledger(BudgetSpec()).in_thread(sum, [1])


async def test_a_cancelled_call_holds_its_thread_until_the_thread_is_done() -> None:
    """Cancelling the caller does not stop the thread: the unit stays taken while it runs,
    so cancelling in a loop cannot start more threads than the budget."""
    ledger = Ledger(BudgetSpec(threads=1))
    gate, started = threading.Event(), threading.Event()

    def work() -> bool:
        started.set()
        return gate.wait(10)

    call = asyncio.ensure_future(ledger.in_thread(work))
    try:
        # Cancelled before its thread starts, the call frees its unit at once (nothing runs):
        # wait until the thread really runs.
        assert await asyncio.to_thread(started.wait, 10), "the call's thread never started"
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert ledger.usage()["threads"] == 1, "the thread still runs"
    finally:
        gate.set()
    # The unit comes back when the thread ends: the next call gets it (it waits for it).
    assert await asyncio.wait_for(ledger.in_thread(sum, [2, 3]), 5) == 5
    assert ledger.usage()["threads"] == 0


async def test_calls_past_the_threads_budget_wait_then_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budgets, "THREAD_PATIENCE", 0.05)
    ledger = Ledger(BudgetSpec(threads=1))
    gate = threading.Event()
    first = asyncio.ensure_future(ledger.in_thread(gate.wait, 10))
    second = asyncio.ensure_future(ledger.in_thread(sum, [1]))  # runs after the first took the unit
    try:
        with pytest.raises(Exhausted, match="threads: none of this function's came back"):
            await second
    finally:
        gate.set()
    assert await asyncio.wait_for(first, 5) is True
    assert ledger.usage()["threads"] == 0
