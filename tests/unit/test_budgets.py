"""Per-function budgets: declared from the manifest and the policy, taken and given back once."""

from __future__ import annotations

import asyncio

import pytest

from bento.protocol.policy import Needs, NodePolicy
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
