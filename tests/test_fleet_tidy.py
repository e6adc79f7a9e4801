"""A fleet that cleans up after itself, on real workers and a real Redis.

- A job keeps a handful of keys in Redis, however many batches it has.
- A job lost with Redis's state leaves no work folder, and its batches still
  running write nothing into the Redis that came back.
- A merge queued behind other work for longer than the merge watch's grace is
  not taken for lost: no false "its worker died?", no second merge.

Each test has a Redis and workers of its own, so what it counts is its own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from diff_helpers import labelled_items
from fleet_helpers import Fleet, locked, own_fleet, wait_for

from ace_shared.diff.workdir import WorkDir
from ace_shared.tasks.store import COMPLETED, FAILED, RUNNING, TaskStore
from ace_workers.fleet.mergewatch import MERGE_GRACE_SECONDS
from ace_workers.fleet.sweep import SWEEP_SECONDS


@pytest.fixture(scope="module")
def items(pg_cluster: Any) -> str:
    return labelled_items(pg_cluster, "tidy_items", 100000, "id % 997 = 0")


@pytest.fixture(scope="module")
def others(pg_cluster: Any) -> str:
    return labelled_items(pg_cluster, "tidy_others", 2000, "id % 97 = 0")


def _store(fl: Fleet) -> TaskStore:
    return TaskStore(fl.env["ACE_DATABASE_URL"])


def _submit(fl: Fleet, table: str, *extra: str) -> str:
    sent = fl.ace("table-diff", "testclus", table, "--no-wait", *extra)
    assert sent.returncode == 0, sent.stderr
    return sent.stdout.strip().splitlines()[-1]


def _finished(fl: Fleet, task_id: str, timeout: float) -> Any:
    store = _store(fl)
    wait_for(lambda: store.get(task_id).status in (COMPLETED, FAILED), timeout,
             f"task {task_id} to finish", interval=0.2)
    return store.get(task_id)


def _work(fl: Fleet, task_id: str) -> Path:
    return WorkDir.for_task(fl.env["ACE_OUTPUT_DIR"], task_id).path


def _received(fl: Fleet, name: str, task_id: str) -> int:
    return len(re.findall(rf"Task {re.escape(name)}\[{re.escape(task_id)}\] received",
                          "".join(fl.log(n) for n in fl.names)))


def _keys_of(client: redis.Redis, task_id: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(f"*{task_id}*", count=1000))


def test_keys_per_job_do_not_grow_with_its_batches(items, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with own_fleet(tmp_path, ("w1", "w2")) as fl:
        task_id = _submit(fl, items, "--block-rows=1000")
        rec = _finished(fl, task_id, 180)
        assert rec.status == COMPLETED, rec.error
        batches = len(re.findall(rf"ace\.diff_ranges\[{task_id}\.b\d+\] received",
                                 "".join(fl.log(n) for n in fl.names)))
        assert batches >= 10  # enough batches for a key each to show
        broker = redis.Redis.from_url(fl.env["ACE_BROKER_URL"])
        backend = redis.Redis.from_url(fl.env["ACE_RESULT_BACKEND"])
        time.sleep(1)  # the merge's own release, after it recorded the outcome
        kept = _keys_of(broker, task_id) + _keys_of(backend, task_id)
        assert len(kept) <= 3, kept  # its published state and its marks, not one per batch
        assert not list(backend.scan_iter("celery-task-meta-*"))
        assert not _work(fl, task_id).exists()


def test_a_job_lost_with_redis_leaves_no_folder_and_its_batches_write_nothing(
        pg_cluster, items, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with own_fleet(tmp_path, ("w1",), concurrency=1) as fl:
        redis_server = fl.redis
        assert redis_server is not None
        client = redis.Redis.from_url(fl.env["ACE_BROKER_URL"])
        with locked(pg_cluster, items, 1):  # its first batch runs, waiting on n2
            task_id = _submit(fl, items, "--block-rows=1000")
            work = _work(fl, task_id)
            wait_for(lambda: _keys_of(client, f"{task_id}.b"), 60, "its first batch to run")
            time.sleep(SWEEP_SECONDS + 2)  # the workers have seen Redis know it
            redis_server.restart()  # keeps nothing on disk: the running batch goes on
            rec = _finished(fl, task_id, 60)
            assert rec.status == FAILED and "lost" in rec.error, rec.error
        # the batch that was running ends once the lock is gone
        backend = redis.Redis.from_url(fl.env["ACE_RESULT_BACKEND"])

        def quiet() -> bool:  # no batch of it runs (holds a lease) any more
            return not [k for k in _keys_of(client, task_id) if k.startswith("ace:lease:")]
        time.sleep(2)
        wait_for(quiet, 60, "the running batch to end")
        time.sleep(2)
        assert not work.exists()
        # only the outcome is published again; no done mark, progress or result of a batch
        assert _keys_of(client, task_id) == [f"ace:task:{task_id}"]
        assert _keys_of(backend, task_id) == []


def test_a_merge_queued_behind_other_work_is_not_taken_for_lost(
        pg_cluster, items, others, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One worker process: a diff's merge waits behind another diff's planning, which
    waits on a lock for longer than the merge watch's grace."""
    with own_fleet(tmp_path, ("w1",), concurrency=1) as fl:
        client = redis.Redis.from_url(fl.env["ACE_BROKER_URL"])
        with locked(pg_cluster, others, 0, 1, 2):  # the second diff plans, waiting
            with locked(pg_cluster, items, 1):  # the first diff's batches wait...
                first = _submit(fl, items, "--block-rows=1000")
                wait_for(lambda: _keys_of(client, f"{first}.b"), 60, "its first batch to run")
                second = _submit(fl, others)  # ...until the second is queued before its merge
            wait_for(lambda: _received(fl, "ace.table_diff", second) == 1, 120,
                     "the second diff to take the worker")
            assert _store(fl).get(first).status == RUNNING  # its merge waits in the queue
            time.sleep(MERGE_GRACE_SECONDS + 3 * SWEEP_SECONDS)
            assert _store(fl).get(first).status == RUNNING
        done = _finished(fl, first, 120)
        assert done.status == COMPLETED, done.error
        assert _finished(fl, second, 120).status == COMPLETED
        assert "merge never came" not in fl.log("w1")
        assert _received(fl, "ace.merge_diff", f"{first}.merge") == 1
