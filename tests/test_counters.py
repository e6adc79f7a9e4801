"""The fleet's shared counters, on fakeredis (they talk to Redis directly, through one Lua script)."""

from __future__ import annotations

import fakeredis

from ace_shared.diff.budget import DiffBudget, LocalPartCounter
from ace_workers.fleet.counters import RedisPartCounter


def test_a_part_reported_again_is_not_counted_twice() -> None:
    counter = RedisPartCounter(fakeredis.FakeRedis(), "progress:td_x")
    assert counter.record("0", 3) == 3
    assert counter.record("10", 2) == 5
    assert counter.record("0", 3) == 5      # the batch ran again after its worker died
    assert counter.record("0", 1) == 5      # and its first ranges do not lower the figure
    assert counter.record("0", 4) == 6
    assert counter.total() == 6


def test_the_budget_is_shared_by_every_counter_on_the_same_key() -> None:
    server = fakeredis.FakeServer()
    one = DiffBudget(RedisPartCounter(fakeredis.FakeRedis(server=server), "budget:td_y"), 10)
    two = DiffBudget(RedisPartCounter(fakeredis.FakeRedis(server=server), "budget:td_y"), 10)
    one.record("0", 6)
    assert not two.exhausted()
    two.record("5", 4)
    assert one.exhausted() and two.exhausted()


def test_counters_of_different_jobs_do_not_mix_and_clear_removes_them() -> None:
    client = fakeredis.FakeRedis()
    a, b = RedisPartCounter(client, "budget:a"), RedisPartCounter(client, "budget:b")
    a.record("0", 7)
    assert b.total() == 0
    a.clear()
    assert a.total() == 0 and not client.keys("ace:budget:a*")


def test_keys_expire_so_an_abandoned_job_leaves_nothing_behind() -> None:
    client = fakeredis.FakeRedis()
    RedisPartCounter(client, "progress:z", ttl_seconds=60).record("0", 1)
    assert 0 < client.ttl("ace:progress:z:total") <= 60


def test_the_in_process_counter_follows_the_same_rules() -> None:
    counter = LocalPartCounter()
    assert counter.record("0", 3) == 3
    assert counter.record("0", 2) == 3
    assert counter.record("1", 1) == 4
