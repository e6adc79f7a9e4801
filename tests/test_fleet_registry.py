"""What the fleet's processes tell each other: pool sizes, finished jobs, submitted tasks.

The first two go through Redis directly, so fakeredis drives them here; the
fleet tests show them between real processes.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from sqlalchemy.exc import IntegrityError

from ace_shared.tasks.store import RUNNING, TaskStore, record_submission
from ace_workers import finished
from ace_workers.slots import STALE_AFTER_SECONDS, announce, live_slots, withdraw


def test_live_slots_add_up_every_worker_seen_lately() -> None:
    client = fakeredis.FakeRedis()
    assert live_slots(client) == 0
    announce(client, "w1@a", 4, now=1000.0)
    announce(client, "w2@b", 2, now=1001.0)
    assert live_slots(client, now=1002.0) == 6
    announce(client, "w1@a", 8, now=1003.0)  # restarted with a larger pool
    assert live_slots(client, now=1004.0) == 10


def test_a_worker_that_stopped_or_died_no_longer_counts() -> None:
    client = fakeredis.FakeRedis()
    announce(client, "stopped@a", 4, now=1000.0)
    announce(client, "killed@b", 2, now=1000.0)
    announce(client, "alive@c", 3, now=1000.0)
    withdraw(client, "stopped@a")
    later = 1000.0 + STALE_AFTER_SECONDS + 1
    announce(client, "alive@c", 3, now=later)
    assert live_slots(client, now=later) == 3
    assert set(client.hkeys("ace:worker_slots")) == {b"alive@c"}  # the dead entry is gone


def test_a_garbled_entry_is_dropped_not_fatal() -> None:
    client = fakeredis.FakeRedis()
    client.hset("ace:worker_slots", "odd@x", "not json")
    announce(client, "w1@a", 2)
    assert live_slots(client) == 2
    assert client.hkeys("ace:worker_slots") == [b"w1@a"]


def test_a_follower_wakes_as_soon_as_the_job_ends() -> None:
    client = fakeredis.FakeRedis()
    threading.Timer(0.2, finished.ring, (client, "td_1")).start()
    started = time.monotonic()
    assert finished.wait(client, "td_1", timeout=5)
    assert time.monotonic() - started < 2


def test_the_doorbell_keeps_ringing_for_later_followers_and_only_for_its_job() -> None:
    client = fakeredis.FakeRedis()
    finished.ring(client, "td_1")
    assert finished.wait(client, "td_1", timeout=0.1)
    assert finished.wait(client, "td_1", timeout=0.1)  # a second follower, or a second look
    assert not finished.wait(client, "td_2", timeout=0.1)
    assert 0 < client.ttl(finished.finished_key("td_1")) <= finished.KEEP_SECONDS


def test_the_task_store_announces_only_the_first_outcome(tmp_path: Path) -> None:
    heard: list[str] = []
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}", on_finish=heard.append)
    store.create("td_a", "table-diff", cluster_name="c", table_name="public.t",
                 requested_by="me")
    store.mark_running("td_a")
    store.set_progress("td_a", 3)
    assert heard == []
    assert store.complete("td_a", {"diff_file": "x"})
    assert not store.fail("td_a", "too late")  # first outcome wins, and is the one announced
    assert heard == ["td_a"]


def test_submitter_and_worker_record_one_row_in_either_order(tmp_path: Path) -> None:
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    row = {"task_type": "table-diff", "cluster_name": "c", "table_name": "public.t",
           "requested_by": "alice", "submitted_at": "2030-01-01T00:00:00+00:00"}
    assert record_submission(store, "td_b", {"nodes": "all"}, row)
    store.mark_running("td_b")
    assert not record_submission(store, "td_b", {"nodes": "all"}, row)  # the second writer
    rec = store.get("td_b")
    assert rec is not None and rec.status == RUNNING and rec.requested_by == "alice"
    assert rec.options == {"nodes": "all"}
    with pytest.raises(IntegrityError):  # an id used twice by mistake is still an error
        store.create("td_b", "table-diff", cluster_name="c", table_name="t", requested_by="x")


def _open_store(url: str, barrier: Any, failures: Any) -> None:
    barrier.wait()
    try:
        TaskStore(url)
    except Exception as exc:  # reported to the parent, which asserts there were none
        failures.put(repr(exc))


def test_processes_opening_a_new_task_store_at_once_all_succeed(tmp_path: Path) -> None:
    """A submitter and the worker that took its message may both be first on a new database."""
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'tasks{round_}.db'}"
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_store, args=(url, barrier, failures))
                 for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert all(p.exitcode == 0 for p in procs)
    assert failures.empty(), failures.get()
