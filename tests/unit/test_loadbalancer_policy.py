"""LoadBalancer's decisions (bento.functions.loadbalancer.policy), driven by an injected clock."""

from __future__ import annotations

import pytest

from bento.functions.loadbalancer.policy import (
    DRAINING,
    READY,
    Pool,
    Replica,
    Settings,
    Start,
    Stop,
)

FAST = Settings(
    minimum=1, maximum=3, high=2.0, low=0.5, up_after=5, down_after=30, start_timeout=60, box_backoff=20
)


def started(pool: Pool, now: float) -> list[Replica]:
    """Carry out the plan at ``now``: every new replica says it is ready at once."""
    new = []
    for action in pool.plan(now):
        if isinstance(action, Start):
            pool.ready(action.replica, f"addr{action.replica.id}", now)
            new.append(action.replica)
    return new


def test_starts_the_minimum_and_spreads_over_boxes_preferred_first() -> None:
    pool = Pool(Settings(minimum=3, maximum=4), ["b1", "b2"])
    first = started(pool, 0.0)
    assert [r.box for r in first] == ["b1", "b2", "b1"]
    assert started(pool, 1.0) == []  # enough


def test_least_connections_with_round_robin_ties() -> None:
    pool = Pool(Settings(minimum=2, maximum=2), ["b1", "b2"])
    a, b = started(pool, 0.0)
    picks = [pool.choose() for _ in range(4)]
    assert set(picks) == {a, b}  # idle replicas share the light load in turn
    pool.opened(a)
    pool.opened(a)
    pool.opened(b)
    assert pool.choose() is b  # fewer live connections wins
    pool.closed(a)
    assert a.served == 1 and a.live == 1
    assert pool.choose(avoid=frozenset({b.id, a.id})) is None


def test_scales_up_only_after_the_load_stays_high_and_one_at_a_time() -> None:
    pool = Pool(FAST, ["b1"])
    (a,) = started(pool, 0.0)
    for _ in range(3):
        pool.opened(a)  # load 3 > high 2
    assert started(pool, 1.0) == []  # not yet: it must stay high for up_after
    assert pool.plan(5.9) == []
    actions = pool.plan(6.0)
    assert [type(x) for x in actions] == [Start] and pool.desired == 2
    # While that one starts, its capacity counts (load 3/2 = 1.5) and nothing more starts.
    assert pool.plan(20.0) == []
    pool.ready(actions[0].replica, "addr", 21.0)
    for _ in range(4):
        pool.opened(a)  # 7 over 2 replicas
    assert pool.plan(22.0) == [] and [type(x) for x in pool.plan(27.0)] == [Start]
    for _ in range(20):
        pool.opened(a)
    for t in (40.0, 50.0, 60.0):
        started(pool, t)
    assert pool.desired == FAST.maximum and len(pool.replicas) == FAST.maximum


def test_scales_down_by_draining_never_stopping_a_replica_with_live_connections() -> None:
    pool = Pool(FAST, ["b1", "b2"])
    pool.desired = 3
    a, b, c = started(pool, 0.0)
    pool.opened(b)
    pool.opened(c)  # load 2/3: not below low
    assert pool.plan(100.0) == []
    pool.closed(c)  # load 1/3 < 0.5 from now on
    assert pool.plan(110.0) == []
    assert pool.plan(139.0) == []  # not for down_after yet
    actions = pool.plan(140.0)
    assert pool.desired == 2
    # An idle one is drained and stopped at once; b, which holds a connection, is not touched.
    assert len(actions) == 1 and isinstance(actions[0], Stop) and actions[0].replica in (a, c)
    assert b.state == READY and b in pool.replicas


def test_a_drained_replica_is_stopped_only_when_its_last_connection_ends() -> None:
    pool = Pool(FAST, ["b1"])
    pool.desired = 2
    a, b = started(pool, 0.0)
    pool.opened(a)
    pool.opened(b)
    pool.desired = 1  # as if the low watermark had decided it
    assert pool.plan(1.0) == []
    drained = next(r for r in (a, b) if r.state == DRAINING)
    assert pool.choose() is not drained  # no new connections for it
    assert pool.plan(2.0) == []  # it still holds one
    pool.closed(drained)
    assert [(type(x), x.replica) for x in pool.plan(3.0)] == [(Stop, drained)]


def test_a_lost_replica_is_replaced_on_another_box_and_its_box_avoided_for_a_while() -> None:
    pool = Pool(FAST, ["b1", "b2"])
    (a,) = started(pool, 0.0)
    assert a.box == "b1"
    assert pool.lost(a, 10.0) and not pool.lost(a, 10.0)
    (replacement,) = started(pool, 10.5)
    assert replacement.box == "b2"
    pool.lost(replacement, 11.0)  # both boxes in their back-off: nothing to start
    assert pool.plan(12.0) == []
    assert [x.replica.box for x in pool.plan(31.0) if isinstance(x, Start)] == ["b1"]


def test_a_replica_that_never_says_it_is_ready_is_stopped() -> None:
    pool = Pool(FAST, ["b1", "b2"])
    (slow,) = [x.replica for x in pool.plan(0.0)]
    assert pool.plan(60.0) == []
    actions = pool.plan(61.0)
    assert (type(actions[0]), actions[0].replica) == (Stop, slow)
    assert "not ready within 60 s" in actions[0].why
    assert [x.replica.box for x in actions[1:]] == ["b2"]  # b1 is in its back-off


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"maximum": 1000}, "max <= 64"),
        ({"minimum": 0}, "1 <= min"),
        ({"minimum": 5, "maximum": 2}, "min <= max"),
        ({"low": 3.0, "high": 2.0}, "low < high"),
        ({"up_after": -1}, "up_after"),
    ],
)
def test_absurd_settings_are_refused_with_the_reason(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("<", ".*").replace("(", r"\(")):
        Pool(Settings(**changes), ["b1"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one box"):
        Pool(Settings(), [])


def test_the_module_s_example_runs() -> None:
    import doctest

    from bento.functions.loadbalancer import policy

    assert doctest.testmod(policy).failed == 0
